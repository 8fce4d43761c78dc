"""Deep ensemble: distinct members on one base model; the prediction is their mean."""

import pytest
import torch

from bayeslora.methods.adamw import AdamW, AdamWConfig
from bayeslora.methods.ensemble import DeepEnsemble, EnsembleConfig, reset_lora
from bayeslora.training.loop import predict_logits


def test_members_differ_and_the_ensemble_is_their_mean(
    toy_classifier, toy_train, toy_eval, quick_settings
):
    with toy_classifier() as clf:
        method = DeepEnsemble(EnsembleConfig(lr=1e-2, members=3), train=quick_settings(steps=8))
        method.fit(clf, toy_train)
        states = method.member_states
        assert len(states) == 3
        for i in range(3):
            for j in range(i + 1, 3):
                assert all(not torch.equal(states[i][n], states[j][n]) for n in states[i])
        assert len({method.member_seed(i) for i in range(3)}) == 3

        members = method.member_proba(toy_eval)
        assert members.shape == (3, len(toy_eval), 2)
        assert (members[0] - members[1]).abs().max() > 1e-4 and (
            members[1] - members[2]
        ).abs().max() > 1e-4
        ensemble = method.predict_proba(toy_eval)
        torch.testing.assert_close(ensemble.sum(-1), torch.ones(len(toy_eval)))
        manual = []
        for state in states:
            clf.load_lora_state(state)
            clf.eval()
            manual.append(predict_logits(clf, toy_eval).softmax(-1))
        torch.testing.assert_close(ensemble, torch.stack(manual).mean(0))
        assert method.extra_metrics() == {"members": 3.0}
        # The members' training logs follow each other on one step axis.
        steps = [h["step"] for h in method.history]
        assert steps == sorted(steps) and steps[-1] == 24
        assert {h["ensemble_member"] for h in method.history} == {0.0, 1.0, 2.0}


def test_one_member_is_exactly_the_adamw_run(toy_classifier, toy_train, toy_eval, quick_settings):
    with toy_classifier(seed=3) as clf:
        adamw = AdamW(AdamWConfig(lr=1e-2), train=quick_settings(steps=6, seed=3))
        adamw.fit(clf, toy_train)
        expected_state, expected = clf.lora_state(), adamw.predict_proba(toy_eval)
    with toy_classifier(seed=3) as clf:
        ensemble = DeepEnsemble(
            EnsembleConfig(lr=1e-2, members=1), train=quick_settings(steps=6, seed=3)
        )
        ensemble.fit(clf, toy_train)
        assert all(torch.equal(expected_state[n], p) for n, p in clf.lora_named_parameters())
        torch.testing.assert_close(ensemble.predict_proba(toy_eval), expected, rtol=0, atol=0)


def test_reset_lora_is_a_fresh_seeded_init(toy_classifier):
    with toy_classifier() as clf:
        original = clf.lora_state()
        reset_lora(clf, 123)
        first = clf.lora_state()
        reset_lora(clf, 123)
        assert all(torch.equal(first[n], p) for n, p in clf.lora_named_parameters())
        for name, value in first.items():
            if "lora_B" in name:
                assert not value.any()
            else:
                assert not torch.equal(value, original[name])


def test_zero_members_is_an_error(toy_classifier, toy_train, quick_settings):
    with toy_classifier() as clf, pytest.raises(ValueError, match="members"):
        DeepEnsemble(EnsembleConfig(members=0), train=quick_settings(steps=2)).fit(clf, toy_train)


def test_cli_runs_ensemble(bench_cli, tmp_path):
    code, out = bench_cli("ensemble", tmp_path)
    assert code == 0
    assert "ensemble" in out and "arc_easy" in out
