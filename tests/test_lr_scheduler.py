"""Learning-rate schedules against PyTorch's: the same lr (and OneCycleLR's momentum) at every step."""
import math

import pytest

import tinygradnorm as tg

torch = pytest.importorskip("torch")

SCHEDULES = [
    ("StepLR", dict(step_size=3, gamma=0.5), "sgd", 12),
    ("MultiStepLR", dict(milestones=[2, 5, 5, 9], gamma=0.3), "sgd", 12),
    ("ExponentialLR", dict(gamma=0.9), "adam", 10),
    ("LinearLR", dict(start_factor=0.25, end_factor=0.9, total_iters=4), "sgd", 8),
    ("LinearLR", dict(), "adam", 8),
    ("CosineAnnealingLR", dict(T_max=5, eta_min=0.01), "sgd", 14),
    ("OneCycleLR", dict(max_lr=0.5, total_steps=20), "sgd", 20),
    ("OneCycleLR", dict(max_lr=[0.3, 0.6], epochs=3, steps_per_epoch=5, pct_start=0.4, anneal_strategy="linear",
                        three_phase=True, div_factor=10, final_div_factor=100), "sgd", 15),
    ("OneCycleLR", dict(max_lr=0.01, total_steps=12, base_momentum=0.8, max_momentum=0.9), "adam", 12),
]


def _optimizers(kind):
    """The same two-group optimizer in both libraries."""
    def groups(lib, p, q):
        return [{"params": [p]}, {"params": [q], "lr": 0.05}]
    a, b = tg.zeros(2, requires_grad=True), tg.zeros(3, requires_grad=True)
    ta, tb = torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)
    if kind == "sgd":
        return tg.optim.SGD(groups(tg, a, b), lr=0.1, momentum=0.9), torch.optim.SGD(groups(torch, ta, tb), lr=0.1,
                                                                                      momentum=0.9)
    return tg.optim.Adam(groups(tg, a, b), lr=0.1), torch.optim.Adam(groups(torch, ta, tb), lr=0.1)


def _momenta(opt):
    return [g.get("momentum", g.get("betas", (None,))[0]) for g in opt.param_groups]


@pytest.mark.parametrize("name, kwargs, kind, steps", SCHEDULES, ids=[f"{s[0]}-{i}" for i, s in enumerate(SCHEDULES)])
def test_schedule_matches_torch_step_by_step(name, kwargs, kind, steps):
    ours_opt, theirs_opt = _optimizers(kind)
    ours = getattr(tg.optim.lr_scheduler, name)(ours_opt, **kwargs)
    theirs = getattr(torch.optim.lr_scheduler, name)(theirs_opt, **kwargs)
    for step in range(steps):
        for a, b in zip(ours.get_last_lr(), theirs.get_last_lr()):
            assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15), (step, ours.get_last_lr(), theirs.get_last_lr())
        for a, b in zip(_momenta(ours_opt), _momenta(theirs_opt)):
            assert math.isclose(a, b, rel_tol=1e-12), (step, a, b)
        ours_opt.step(), theirs_opt.step()
        ours.step(), theirs.step()
    state = ours.state_dict()
    again = getattr(tg.optim.lr_scheduler, name)(_optimizers(kind)[0], **kwargs)
    again.load_state_dict(state)
    assert again.last_epoch == ours.last_epoch


def test_one_cycle_refuses_a_step_past_its_end():
    opt, _ = _optimizers("sgd")
    sched = tg.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=2)
    sched.step()
    sched.step()
    with pytest.raises(ValueError, match="Tried to step 3 times. The specified number of total steps is 2"):
        sched.step()


@pytest.mark.parametrize("kwargs", [dict(), dict(mode="max", patience=1, threshold_mode="abs", threshold=0.05),
                                    dict(patience=0, cooldown=2, factor=0.5, min_lr=[0.02, 0.0])])
def test_reduce_on_plateau_matches_torch(kwargs):
    ours_opt, theirs_opt = _optimizers("sgd")
    ours = tg.optim.lr_scheduler.ReduceLROnPlateau(ours_opt, **kwargs)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs_opt, **kwargs)
    metrics = [1.0, 0.9, 0.95, 0.95, 0.96, 0.8, 0.81, 0.82, 0.83, 0.84, 0.85] * 3
    for m in metrics:
        ours.step(m)
        theirs.step(m)
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-12)
    with pytest.raises(ValueError, match="Factor should be < 1.0"):
        tg.optim.lr_scheduler.ReduceLROnPlateau(ours_opt, factor=1.0)
