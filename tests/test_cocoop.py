"""CoCoOp's model against a reference written here from the paper's equations, and its batched evaluation."""
import pytest
import torch
import torch.nn.functional as F
from clip import clip as clip_module
from fixtures import assert_gradients_close, tiny_clip

from trainers.clip_loader import cast_frozen_weights
from trainers.cocoop_model import CoCoOpCLIP

NAMES = ["abyssinian", "american_bulldog", "great_pyrenees", "staffordshire bull terrier dog"]


def build(seed=0, names=NAMES, **kwargs):
    clip_model = tiny_clip(seed)
    model = CoCoOpCLIP(clip_model, names, n_ctx=4, ctx_init="a photo of a", **kwargs)
    with torch.no_grad():  # move the context away from its word initialisation so that every term matters
        model.prompt_learner.ctx.add_(torch.randn_like(model.prompt_learner.ctx) * 0.1)
    return model


def images(count, seed=1):
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def paper_logits(model, batch):
    """CoCoOp (Zhou et al. 2022, eq. 3-4) with CLIP's own modules, image by image, class by class:
    ``pi = h(z)``, ``v_m(x) = v_m + pi``, ``p(y|x) ~ exp(cos(z, g(t_y(x))) * tau)``, where ``h`` is the meta-net
    and ``t_y(x) = [SOS] v_1(x) .. v_M(x) [CLASS_y] . [EOS]`` over CLIP's 77 positions."""
    clip_model = model.clip
    ctx = model.prompt_learner.ctx
    n_ctx = ctx.shape[0]
    linear1, linear2 = model.meta_net.linear1, model.meta_net.linear2
    tau = clip_model.logit_scale.exp()
    rows = []
    for image in batch:
        z = clip_model.visual(image[None])[0]
        z = z / z.norm()
        pi = F.linear(torch.relu(F.linear(z, linear1.weight, linear1.bias)), linear2.weight, linear2.bias)
        row = []
        for name in NAMES:
            tokens = clip_module.tokenize(f"a photo of a {name.replace('_', ' ')}.")
            embedded = clip_model.token_embedding(tokens)[0]
            embedded = torch.cat([embedded[:1], ctx + pi, embedded[1 + n_ctx:]])
            x = clip_model.transformer((embedded + clip_model.positional_embedding)[:, None])[:, 0]
            text = clip_model.ln_final(x)[tokens[0].argmax()] @ clip_model.text_projection
            row.append(tau * z @ (text / text.norm()))
        rows.append(torch.stack(row))
    return torch.stack(rows)


def learned(model):
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def test_learned_parameters_are_the_context_and_the_meta_net():
    model = build()
    shapes = {name: tuple(p.shape) for name, p in learned(model).items()}
    # Meta-net Linear(d, d // 16) - ReLU - Linear(d // 16, ctx_dim): d = 32 (embedding), ctx_dim = 64 (text width).
    assert shapes == {
        "prompt_learner.ctx": (4, 64),
        "meta_net.linear1.weight": (2, 32), "meta_net.linear1.bias": (2,),
        "meta_net.linear2.weight": (64, 2), "meta_net.linear2.bias": (64,),
    }
    assert isinstance(model.meta_net.relu, torch.nn.ReLU)


@pytest.mark.parametrize("reference_mode", [False, True])
def test_logits_loss_and_gradients_equal_the_paper_equations(reference_mode):
    model = build()
    model.reference_mode = reference_mode
    batch, labels = images(3), torch.tensor([2, 0, 3])
    loss, logits, _ = model.training_loss(batch, labels)
    loss.backward()
    ours = {name: p.grad.clone() for name, p in learned(model).items()}
    model.zero_grad()

    expected_logits = paper_logits(model, batch)
    expected_loss = -torch.log_softmax(expected_logits, dim=1)[torch.arange(3), labels].mean()
    expected_loss.backward()
    torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-5)
    assert_gradients_close(ours, {name: p.grad for name, p in learned(model).items()})


def test_batched_path_equals_the_per_image_loop():
    model = build()
    batch, labels = images(5), torch.tensor([0, 1, 2, 3, 1])
    model.reference_mode = True
    loop_loss, loop_logits, _ = model.training_loss(batch, labels)
    loop_loss.backward()
    loop_grads = {name: p.grad.clone() for name, p in learned(model).items()}
    model.zero_grad()
    model.reference_mode = False
    calls = []
    handle = model.text_encoder.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    loss, logits, _ = model.training_loss(batch, labels)
    handle.remove()
    loss.backward()
    assert calls == [5 * 4]  # one text-encoder call over images x classes: no loop over the batch
    torch.testing.assert_close(logits, loop_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, loop_loss, rtol=1e-5, atol=1e-6)
    assert_gradients_close({name: p.grad for name, p in learned(model).items()}, loop_grads)


@pytest.mark.parametrize("budget,expected_calls", [(8, [8, 8, 4]), (3, [4] * 5), (10000, [20])])
def test_evaluation_chunks_images_within_the_sequence_budget(budget, expected_calls):
    model = build(sequence_budget=budget).eval()
    batch = images(5)
    with torch.no_grad():
        whole = build(sequence_budget=10000).eval()(batch)
        calls = []
        handle = model.text_encoder.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
        chunked = model(batch)
        handle.remove()
    # 4 classes: budget 8 -> 2 images (8 sequences) per call; budget 3 < classes -> one image per call.
    assert calls == expected_calls
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


def test_gradients_reach_only_the_learned_parameters():
    model = build()
    loss, _, _ = model.training_loss(images(2), torch.tensor([1, 3]))
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert name.startswith("clip.") and p.grad is None, name
    assert set(learned(model)) == {"prompt_learner.ctx", "meta_net.linear1.weight", "meta_net.linear1.bias",
                                   "meta_net.linear2.weight", "meta_net.linear2.bias"}


@pytest.mark.parametrize("precision", ["bf16", "fp16", "amp"])
def test_low_precision_keeps_learned_parameters_in_fp32_and_logits_close_to_fp32(precision):
    """bf16 / fp16 frozen weights, or fp32 weights under fp16 autocast (amp), on the CPU."""
    model = build()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "amp": torch.float32}[precision]
    low = CoCoOpCLIP(cast_frozen_weights(tiny_clip(0), dtype), NAMES, n_ctx=4, ctx_init="a photo of a")
    low.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("clip.")}, strict=False)
    assert all(p.dtype == torch.float32 for p in learned(low).values())
    batch, labels = images(2), torch.tensor([0, 2])
    with torch.no_grad():
        reference = model(batch)
    with torch.autocast("cpu", dtype=torch.float16, enabled=precision == "amp"):
        loss, logits, _ = low.training_loss(batch, labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in learned(low).values())
    torch.testing.assert_close(logits.detach().float(), reference, rtol=0.05, atol=0.2)


def test_bad_sequence_budget_is_refused():
    with pytest.raises(ValueError, match="SEQUENCE_BUDGET"):
        build(sequence_budget=0)
