"""training.distillation: the round schedule and the two-step teacher target against closed
forms (the real runs of scripts.train_distill are in tests/scripts/test_train_distill.py)."""

import math

import numpy as np
import pytest
import torch

from common.errors import Diff2LipError
from guided_diffusion.respace import space_timesteps
from guided_diffusion.script_util import (
    tfg_create_model_and_diffusion,
    tfg_model_and_diffusion_defaults,
)
from helpers import TINY_CLI_FLAGS, TINY_FLAGS, lower_half_kwargs, make_preprocessed_root
from training import diff2lip
from training.distillation import ProgressiveDistillation, respacing, round_schedule, step_plan, x0_matching_step
from training.losses import L2Loss


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    make_preprocessed_root(root, n_clips=3, n_frames=14, image_size=32, val_clips=0)
    return root


def linear_alphas_cumprod(steps: int = 1000) -> np.ndarray:
    """DDPM's linear schedule, written out here (beta from 1e-4 to 0.02 over 1000 steps)."""
    return np.cumprod(1 - np.linspace(1e-4, 0.02, steps, dtype=np.float64))


# ----------------------------------------------------------------------------------------------
# The schedule


def test_rounds_halve_the_steps_and_each_student_step_is_a_teacher_step():
    assert round_schedule(8, 2) == [(8, 4), (4, 2)]
    assert round_schedule(16, 4) == [(16, 8), (8, 4)]
    assert round_schedule(2, 1) == [(2, 1)] and round_schedule(8, 1) == [(8, 4), (4, 2), (2, 1)]
    with pytest.raises(Diff2LipError, match="--student_steps 0: a student takes at least 1 step"):
        round_schedule(2, 0)
    for bad in ((6, 4), (2, 2), (8, 3), (3, 1)):
        with pytest.raises(Diff2LipError, match="power of 2"):
            round_schedule(*bad)
    # ddim2N keeps every step of ddimN (1000 steps): the student's steps pair the teacher's.
    assert sorted(space_timesteps(1000, respacing(8))) == list(range(0, 1000, 125))
    for n in (2, 4, 5, 10):
        assert space_timesteps(1000, respacing(n)) <= space_timesteps(1000, respacing(2 * n)), n


def test_step_plan_pairs_consecutive_teacher_steps_and_starts_the_top_where_the_teacher_does():
    teacher = sorted(space_timesteps(1000, "ddim8"))  # 0, 125, ..., 875
    plan = step_plan(space_timesteps(1000, "ddim4"), teacher)
    # 0 -> clean: one step; 250 -> 125 -> 0 and 500 -> 375 -> 250: two; the top starts at 875 (noise).
    assert [[teacher[j] for j in run] for run in plan] == [[0], [250, 125], [500, 375], [875, 750, 625]]
    assert step_plan([0, 500], [0, 500]) == [[0], [1]]  # equal steps: one each
    with pytest.raises(Diff2LipError, match="not teacher timesteps"):
        step_plan([0, 500], [0, 300, 600])


# ----------------------------------------------------------------------------------------------
# The target against closed forms


def test_x0_matching_step_inverts_a_ddim_step():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    a, a_prev = torch.tensor([0.05, 0.3, 0.7, 0.98]).view(-1, 1, 1, 1), torch.tensor([0.3, 0.7, 0.98, 1.0]).view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    x_prev = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps  # DDIM (eta 0) with the true x0 and eps
    assert torch.allclose(x0_matching_step(x_t, x_prev, a, a_prev), x0, atol=1e-5)


class ScaledInput(torch.nn.Module):
    """A "network" whose x0 prediction is known exactly: gain * x_t in the mask (x0 mode), or the
    noise that implies that x0 at the original timestep t (eps mode). `[N, 3, H, W]` -> same."""

    def __init__(self, gain: float, predict_eps: bool = False):
        super().__init__()
        self.gain, self.predict_eps = gain, predict_eps
        self.alphas_cumprod = torch.from_numpy(linear_alphas_cumprod()).float()
        self.p = torch.nn.Parameter(torch.zeros(()))  # a parameter, so deepcopy / devices work

    def forward(self, x, t, cond_img=None, mask=None, ref_img=None, indiv_mels=None):
        x = x * mask + cond_img * (1 - mask)  # the TFG input convention
        x0 = self.gain * x + self.p
        if not self.predict_eps:
            return x0
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()


def numpy_ddim(x: np.ndarray, timesteps, gain: float) -> np.ndarray:
    """The teacher's clipped DDIM steps (eta 0) from x at timesteps[0] to timesteps[-1] (None: the
    clean frame), for x0 = clip(gain * x): written out independently of the code."""
    abar = linear_alphas_cumprod()
    for t, t_prev in zip(timesteps, timesteps[1:]):
        a, a_prev = abar[t], 1.0 if t_prev is None else abar[t_prev]
        x0 = np.clip(gain * x, -1, 1)
        eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
        x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
    return x


FLAGS_X0 = dict(tfg_model_and_diffusion_defaults(), predict_xstart=True, learn_sigma=False)


@pytest.mark.parametrize("predict_eps", [False, True])
def test_the_target_equals_the_analytic_two_step_ddim_value(predict_eps):
    """Teacher x0 = clip(0.6 x); student ddim2 (steps 0, 500), teacher ddim4 (0, 250, 500, 750)."""
    gain = 0.6
    flags = dict(FLAGS_X0, predict_xstart=not predict_eps)
    objective = ProgressiveDistillation(flags, teacher_steps=4, student_steps=2)
    objective.attach(ScaledInput(gain, predict_eps))
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(4, 3, 8, 8, generator=g) * 2  # large enough that the teacher clips
    k = torch.tensor([0, 1, 1, 0])
    target = objective.target(x_t, k, lower_half_kwargs(4))
    abar = linear_alphas_cumprod()
    x = x_t.double().numpy()
    for row, step in enumerate(k.tolist()):
        # k = 0: from t=0 one step to the clean frame. k = 1, the top: the teacher starts at 750 from
        # the same input and runs 750 -> 500 -> 250 -> 0; the student steps from 500 to 0.
        runs, (a, a_prev) = ([0, None], (abar[0], 1.0)) if step == 0 else ([750, 500, 250, 0], (abar[500], abar[0]))
        landed = numpy_ddim(x[row], runs, gain)
        ratio = math.sqrt((1 - a_prev) / (1 - a))
        x0 = (landed - ratio * x[row]) / (math.sqrt(a_prev) - ratio * math.sqrt(a))
        expected = (x[row] - math.sqrt(a) * x0) / math.sqrt(1 - a) if predict_eps else x0
        inside = slice(4, 8)  # the mask: outside it the network sees the conditioning, not x_t
        got = target[row, :, inside].double().numpy()
        assert np.allclose(got, expected[:, inside], rtol=1e-4, atol=1e-4 * (100 if predict_eps else 1)), (row, step)


@pytest.mark.parametrize("predict_eps", [False, True])
def test_the_one_step_target_is_the_clean_frame_of_the_teachers_two_steps_from_the_same_noise(predict_eps):
    """The last round, 2 -> 1: the student's one step (t = 500, ddim1) from the noise z must give the
    frame that the teacher's DDIM-2 reaches from z (500 -> 0 -> clean)."""
    gain = 0.6
    objective = ProgressiveDistillation(dict(FLAGS_X0, predict_xstart=not predict_eps), teacher_steps=2, student_steps=1)
    assert objective.student_timesteps.tolist() == [500] and objective.teacher_index.tolist() == [[1, 0]]
    objective.attach(ScaledInput(gain, predict_eps))
    z = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 2
    target = objective.target(z, torch.zeros(3, dtype=torch.long), lower_half_kwargs(3))
    a = linear_alphas_cumprod()[500]
    inside = slice(4, 8)
    for row in range(3):
        x0 = numpy_ddim(z[row].double().numpy(), [500, 0, None], gain)
        expected = (z[row].double().numpy() - math.sqrt(a) * x0) / math.sqrt(1 - a) if predict_eps else x0
        got = target[row, :, inside].double().numpy()
        assert np.allclose(got, expected[:, inside], rtol=1e-4, atol=1e-4 * (100 if predict_eps else 1)), row


class Constant(torch.nn.Module):
    """A network whose x0 is the same image at every step and input: `[N, 3, H, W]` -> that image."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = torch.nn.Parameter(value)

    def forward(self, x, t, **kwargs):
        return self.value.expand_as(x)


def test_with_a_fixed_x0_teacher_the_target_is_that_x0_except_at_the_top_where_the_teacher_starts_higher():
    """Every DDIM chain of a fixed-x0 teacher lands on that x0's trajectory, so the two-step target
    is the image itself; at the top the teacher reads the noise as x_875, the student as x_750."""
    image = torch.rand(1, 3, 8, 8) * 1.6 - 0.8
    objective = ProgressiveDistillation(FLAGS_X0, teacher_steps=8, student_steps=4)
    objective.attach(Constant(image))
    noise = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    target = objective.target(noise, torch.tensor([0, 1, 2, 3]), lower_half_kwargs(4))
    assert torch.allclose(target[:3], image.expand(3, -1, -1, -1), atol=1e-5)
    abar = linear_alphas_cumprod()
    a_teacher, a_student, a_prev = abar[875], abar[750], abar[500]
    z, c = noise[3].double().numpy(), image[0].double().numpy()
    landed = math.sqrt(a_prev) * c + math.sqrt(1 - a_prev) * (z - math.sqrt(a_teacher) * c) / math.sqrt(1 - a_teacher)
    ratio = math.sqrt((1 - a_prev) / (1 - a_student))
    expected = (landed - ratio * z) / (math.sqrt(a_prev) - ratio * math.sqrt(a_student))
    assert np.allclose(target[3].double().numpy(), expected, atol=1e-4)
    assert not np.allclose(expected, c, atol=1e-2)  # the top is not the trivial case


class TwoStepStudent(torch.nn.Module):
    """The exact 2-step student of a fixed-x0 teacher (4 -> 2 steps), written out: the image at
    t = 0, and at the top step (t = 500) the x0 whose step from the noise z lands where the teacher
    lands from z read as x_750: (landed - r z) / (sqrt(a_0) - r sqrt(a_500)). Plus `offset`."""

    def __init__(self, image: torch.Tensor, offset: float):
        super().__init__()
        abar = linear_alphas_cumprod()
        a_teacher, a_student, a_prev = abar[750], abar[500], abar[0]
        ratio = math.sqrt((1 - a_prev) / (1 - a_student))
        denominator = math.sqrt(a_prev) - ratio * math.sqrt(a_student)
        # landed = sqrt(a_prev) c + sqrt(1 - a_prev) (z - sqrt(a_teacher) c) / sqrt(1 - a_teacher) = u c + v z
        u = math.sqrt(a_prev) - math.sqrt(1 - a_prev) * math.sqrt(a_teacher) / math.sqrt(1 - a_teacher)
        v = math.sqrt(1 - a_prev) / math.sqrt(1 - a_teacher)
        self.top = (u / denominator, (v - ratio) / denominator)
        self.image, self.offset = torch.nn.Parameter(image), offset

    def forward(self, x, t, **kwargs):
        top = self.top[0] * self.image + self.top[1] * x
        return torch.where((t == 500).view(-1, 1, 1, 1), top, self.image.expand_as(x)) + self.offset


def test_a_student_equal_to_the_two_step_teacher_has_zero_loss_and_an_offset_costs_its_square(data_root):
    from dataset.tfg_dataset import TFGDataset, collate

    image = torch.rand(1, 3, 32, 32) * 1.6 - 0.8
    args = diff2lip.create_parser().parse_args(TINY_CLI_FLAGS + ["--data_root", str(data_root)])
    batch = collate([TFGDataset(str(data_root), "train", 5)[(i, i)] for i in range(3)])
    diffusion = tfg_create_model_and_diffusion(**dict(TINY_FLAGS, predict_xstart=True, learn_sigma=False))[1]
    objective = ProgressiveDistillation(FLAGS_X0, teacher_steps=4, student_steps=2)
    objective.attach(Constant(image.clone()))
    losses, weights = dict(objective.losses), {"distill": 1.0, "l2": 0.0}
    for offset, expected in ((0.0, 0.0), (0.1, 0.01)):
        total, logged, sequences = objective.forward(args, batch, TwoStepStudent(image.clone(), offset), diffusion, losses,
                                                     weights, torch.Generator().manual_seed(2), torch.device("cpu"))
        assert total.item() == pytest.approx(expected, abs=1e-5), offset
        steps = {key: value for key, value in logged.items() if key.startswith("distill_t")}
        assert set(steps) == {"distill_t0", "distill_t500"}  # this draw has both steps
        assert all(value == pytest.approx(expected, abs=1e-5) for value in steps.values()), steps
    # the image-space losses see the student's clipped x0 inside the mask and the real frame outside
    mask = sequences.mask
    assert torch.equal(sequences.pred * (1 - mask), sequences.real * (1 - mask))
    assert sequences.pred.abs().max() <= 1
    assert L2Loss()(sequences).item() > 0
