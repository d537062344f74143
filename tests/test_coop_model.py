"""CoOp against a reference computation written from CoOp's equations, for every class-token position."""
import pytest
import torch
import torch.nn.functional as F
from fixtures import tiny_clip

from trainers.coop_model import CoOpCLIP
from trainers.encoders import tokenize, tokenizer

CLASSNAMES = ["abyssinian", "great_pyrenees", "staffordshire bull terrier", "pug"]


def clip_text_features(model, embeddings, eot):
    """CLIP's own text path (its Transformer module, all 77 positions) applied to prompt embeddings."""
    x = embeddings + model.positional_embedding
    x = model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
    x = model.ln_final(x)
    return x[torch.arange(x.shape[0]), eot] @ model.text_projection


def reference_logits(model, ctx, classnames, images, position):
    """tau * norm(f(x)) @ norm(g(p_c))^T with p_c laid out as in CoOp's paper and code, built token by token."""
    n_ctx = ctx.shape[-2]
    sos, eot_id = tokenize("")[0, 0], tokenize("")[0, 1]
    rows, eots = [], []
    for c, name in enumerate(classnames):
        name_ids = torch.tensor(tokenizer().encode(name.replace("_", " ")))
        dot_id = torch.tensor(tokenizer().encode("."))
        class_ctx = ctx[c] if ctx.dim() == 3 else ctx
        emb = model.token_embedding
        pieces = {
            "sos": emb(sos.view(1)), "name": emb(name_ids), "tail": emb(torch.cat([dot_id, eot_id.view(1)])),
        }
        half = n_ctx // 2
        if position == "end":
            seq = [pieces["sos"], class_ctx, pieces["name"], pieces["tail"]]
        elif position == "middle":
            seq = [pieces["sos"], class_ctx[:half], pieces["name"], class_ctx[half:], pieces["tail"]]
        else:
            seq = [pieces["sos"], pieces["name"], class_ctx, pieces["tail"]]
        seq = torch.cat(seq)
        eots.append(seq.shape[0] - 1)
        pad = emb(torch.zeros(77 - seq.shape[0], dtype=torch.long))
        rows.append(torch.cat([seq, pad]))
    text = F.normalize(clip_text_features(model, torch.stack(rows), torch.tensor(eots)), dim=-1)
    image = F.normalize(model.encode_image(images), dim=-1)
    return model.logit_scale.exp() * image @ text.t()


@pytest.mark.parametrize("position", ["end", "middle", "front"])
@pytest.mark.parametrize("csc", [False, True])
@pytest.mark.parametrize("n_ctx", [4, 5])  # 5: the middle position splits an odd context 2 / 3, as CoOp's code does
def test_logits_loss_and_gradient_equal_reference(position, csc, n_ctx):
    model_clip = tiny_clip()
    coop = CoOpCLIP(model_clip, CLASSNAMES, n_ctx=n_ctx, csc=csc, position=position)
    images = torch.randn(3, 3, 32, 32)
    labels = torch.tensor([0, 2, 3])

    loss, logits, _ = coop.training_loss(images, labels)
    loss.backward()

    ctx = coop.prompt_learner.ctx.detach().clone().requires_grad_(True)
    expected = reference_logits(model_clip, ctx, CLASSNAMES, images, position)
    expected_loss = F.cross_entropy(expected, labels)
    expected_loss.backward()

    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(coop.prompt_learner.ctx.grad, ctx.grad, rtol=1e-4, atol=1e-5)


def test_reference_mode_gives_same_logits_and_gradients():
    model_clip = tiny_clip()
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([1, 0])
    results = []
    for reference in (False, True):
        torch.manual_seed(3)
        coop = CoOpCLIP(model_clip, CLASSNAMES, n_ctx=4, position="middle")
        coop.reference_mode = reference
        loss, logits, _ = coop.training_loss(images, labels)
        loss.backward()
        results.append((logits.detach(), coop.prompt_learner.ctx.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-3, atol=1e-5)  # float32 summation order


def test_context_initialisation_from_words_and_at_random():
    model_clip = tiny_clip()
    coop = CoOpCLIP(model_clip, CLASSNAMES, ctx_init="a photo of a")
    words = model_clip.token_embedding(tokenize("a photo of a"))[0, 1:5]
    torch.testing.assert_close(coop.prompt_learner.ctx.detach(), words.detach())
    assert coop.prompt_learner.prompt_prefix == "a photo of a"

    torch.manual_seed(0)
    random_ctx = CoOpCLIP(model_clip, CLASSNAMES, n_ctx=16, csc=True).prompt_learner.ctx
    assert random_ctx.shape == (4, 16, 64)
    assert 0.015 < random_ctx.std().item() < 0.025


def test_only_the_context_learns_and_clip_is_untouched():
    model_clip = tiny_clip()
    coop = CoOpCLIP(model_clip, CLASSNAMES, n_ctx=4)
    learned = [name for name, p in coop.named_parameters() if p.requires_grad]
    assert learned == ["prompt_learner.ctx"]
    coop.train()
    assert not coop.clip.training  # CLIP stays in eval mode while the prompts train
    loss, _, _ = coop.training_loss(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    loss.backward()
    assert all(p.grad is None for p in coop.clip.parameters())
    assert "prompt_learner.token_prefix" not in coop.state_dict()  # class-dependent buffers are never saved


def test_evaluation_weights_once_unless_reference_and_predict_equals_forward():
    model_clip = tiny_clip()
    images = torch.randn(3, 3, 32, 32)
    coop = CoOpCLIP(model_clip, CLASSNAMES, n_ctx=4)
    with torch.no_grad():
        weights = coop.evaluation_weights()
        torch.testing.assert_close(weights, coop.class_weights())
        torch.testing.assert_close(coop.predict(images, weights), coop(images), rtol=1e-5, atol=1e-5)
        coop.reference_mode = True
        assert coop.evaluation_weights() is None
        torch.testing.assert_close(coop.predict(images), coop(images))
