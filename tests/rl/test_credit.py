"""Fused credit (inside the update forward) against the standalone credit pass.

The fused weights come from the policy's own training forward (gradients on, train mode,
sdpa after the last credit layer); the standalone ones from a separate no-grad pass over
a bridge. On the same rollouts and weights they must be the same, strategy by strategy.
"""

from __future__ import annotations

import pytest
import torch

from workbench.attention.credit import STRATEGIES
from workbench.attention.params import CreditParams
from workbench.errors import WorkbenchError
from workbench.models import bridge_model, load_hf
from workbench.rl.credit import FusedCredit, rollout_gammas
from workbench.rl.forward import completion_logits, rollout_batch
from workbench.trace import encode_prompt, sample_completions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rollouts():
    from workbench.models import list_models
    from workbench.tasks import get_task

    if not {m.name: m for m in list_models()}["tiny-reasoner"].available:
        pytest.skip("the tiny reasoner checkpoint is not shipped")
    policy, tok = load_hf("tiny-reasoner", device="cpu")
    bridge = bridge_model(policy, tok)
    problems = get_task("countdown").generate(2, seed=3)
    prompts = [encode_prompt(bridge, p.prompt, chat=False) for p in problems]
    torch.manual_seed(0)
    completions = sample_completions(
        policy, prompts, tokenizer=tok, num_generations=4, max_new_tokens=48, temperature=1.0
    )
    completions[1] = []  # an empty completion keeps its row of ones and uses no seed
    return policy, bridge, [prompts[i // 4] for i in range(8)], completions


def fused_gammas(policy, credit, prompts, completions, seed):
    """TRL's way: ``prompt + completion`` rows (here one forward per group) with
    gradients, then `gammas`."""
    width = max(len(c) for c in completions)
    out, k = torch.ones(len(completions), width), 0
    policy.train()
    for g in range(0, len(completions), 4):
        rows, p = completions[g : g + 4], prompts[g]
        t = max(1, max(len(c) for c in rows))
        ids = torch.zeros(4, len(p) + t, dtype=torch.long)
        for r, c in enumerate(rows):
            ids[r, : len(p) + len(c)] = torch.tensor(p + c)
        fused = FusedCredit(
            policy, credit, [(0, len(p) + len(c), len(p)) for c in rows],
            [ids[r, : len(p) + len(c)] for r, c in enumerate(rows)],
        )  # fmt: skip
        with fused:
            logits = policy(ids).logits[:, len(p) - 1 : -1]
        assert logits.requires_grad, "the update forward keeps its gradients"
        out[g : g + 4, :t] = fused.gammas(t, seed=seed + k, logits=logits)
        k += sum(1 for c in rows if c)
    return out


def shared_prompt_gammas(policy, credit, prompts, completions, seed):
    """The native loop's way: each group's prompt once, the completions on its KV cache,
    the credit collected on the completion rows (`workbench.rl.forward`)."""
    batch = rollout_batch(prompts[::4], completions, 4, slice(0, len(completions)))
    fused = FusedCredit(policy, credit, batch.spans, batch.seqs)
    policy.train()
    logits = completion_logits(policy, batch, fused)
    assert logits.requires_grad, "the update forward keeps its gradients"
    return fused.gammas(batch.width, seed=seed, logits=logits)


@pytest.mark.parametrize("layout", ["full rows", "shared prompts"])
@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "none"])
def test_fused_credit_equals_the_standalone_pass(rollouts, strategy, layout):
    policy, bridge, prompts, completions = rollouts
    credit = CreditParams(strategy=strategy)
    reference = rollout_gammas(bridge, prompts, completions, credit, seed=7)
    way = fused_gammas if layout == "full rows" else shared_prompt_gammas
    fused = way(policy, credit, prompts, completions, seed=7)
    assert torch.equal(fused, reference)
    assert (reference[1] == 1.0).all()
    if strategy != "entropy":  # entropy can leave a short rollout without amplified tokens
        assert (reference > 1.0).any(), "the test must exercise amplified positions"


def test_the_fused_forward_is_the_training_forward(rollouts):
    """Same logits (to rounding) and the same gradients as a plain sdpa training forward."""
    policy, _, prompts, completions = rollouts
    p, c = prompts[0], completions[0]
    ids = torch.tensor([p + c])
    policy.train()
    policy.zero_grad()
    plain = policy(ids).logits
    plain.sum().backward()
    want = {n: q.grad.clone() for n, q in policy.named_parameters() if q.grad is not None}
    policy.zero_grad()
    fused = FusedCredit(
        policy, CreditParams(strategy="coupled"), [(0, len(p + c), len(p))], [ids[0]]
    )
    with fused:
        got = policy(ids).logits
    got.sum().backward()
    torch.testing.assert_close(got, plain, rtol=1e-4, atol=1e-4)
    for n, q in policy.named_parameters():
        if n in want:  # float rounding of eager vs sdpa: relative to the gradient's size
            assert float((q.grad - want[n]).norm() / want[n].norm()) < 1e-4, n
    policy.zero_grad()


@pytest.fixture(scope="module")
def short_rollout(toy_llama):
    ids = toy_llama.tokenizer("What is 3 + 4? 3 plus 4 is 7.")["input_ids"]
    return toy_llama, ids[:6], ids[6:]


def test_rollout_gammas_refuses_bad_rollouts_by_name(short_rollout):
    bridge, p, c = short_rollout
    credit = CreditParams(layers=[0, 1])
    assert rollout_gammas(bridge, [p], [c], credit).shape == (1, len(c))
    bad = [
        # a strategy name: AttributeError 'str' object has no attribute 'strategy'
        (([p], [c], "coupled"), {}, "credit must be a wb.CreditParams"),
        # zip(strict=True): a raw ValueError
        (([p, p], [c], credit), {}, "2 prompts for 1 completions"),
        (([p], None, credit), {}, "must be lists"),
        # torch.tensor(..., dtype=long) truncated 5.5 to 5 without a word
        (([p], [[x + 0.5 for x in c]], credit), {}, "completion_ids must hold lists of integer"),
        (([p], ["abc"], credit), {}, "completion_ids must hold lists of integer"),
        # a pad_to narrower than a completion cut its weights off without a word
        (([p], [c], credit), {"pad_to": 3}, "would cut off the longest completion"),
        (([p], [c], CreditParams(strategy="none")), {"pad_to": 3}, "would cut off"),
        (([p], [c], credit), {"pad_to": -1}, "pad_to must be at least 0"),  # RuntimeError
        (([p], [c], credit), {"pad_to": 40.0}, "pad_to must be an integer"),  # TypeError
    ]
    for args, kwargs, match in bad:
        with pytest.raises(WorkbenchError, match=match) as e:
            rollout_gammas(bridge, *args, **kwargs)
        assert e.value.fix


def test_rollouts_that_all_ended_at_once_get_weights_of_one(short_rollout):
    """A batch whose every completion is empty (EOS first) stopped training: "gamma_many got
    no traces", naming a function the caller never called."""
    bridge, p, _ = short_rollout
    credit = CreditParams(strategy="coupled", layers=[0, 1])
    assert rollout_gammas(bridge, [p, p], [[], []], credit).shape == (2, 0)
    assert torch.equal(rollout_gammas(bridge, [p], [[]], credit, pad_to=3), torch.ones(1, 3))


def test_fused_credit_refuses_bad_credit_and_a_narrow_width(short_rollout):
    bridge, p, c = short_rollout
    policy = bridge.original_model if hasattr(bridge, "original_model") else None
    if policy is None or not hasattr(policy, "config"):
        pytest.skip("no plain model behind the bridge")
    spans, ids = [(0, len(p) + len(c), len(p))], [torch.tensor(p + c)]
    with pytest.raises(WorkbenchError, match=r"credit must be a wb\.CreditParams"):
        FusedCredit(policy, "coupled", spans, ids)  # AttributeError
    fused = FusedCredit(policy, CreditParams(layers=[0, 1]), spans, ids)
    # a width narrower than the completion cut its weights off without a word
    with pytest.raises(WorkbenchError, match="width=3 would cut off the longest completion"):
        fused.gammas(3)
    entropy = FusedCredit(policy, CreditParams(strategy="entropy", layers=[0]), spans, ids)
    with pytest.raises(WorkbenchError, match="needs the update logits") as e:
        entropy.gammas(len(c))  # a bare ValueError without a fix
    assert "logits=" in e.value.fix


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seed": "x"}, "seed must be an integer"),  # failed after the first rollouts
        ({"seed": 1.5}, "seed must be an integer"),
        ({"seed": -1}, "seed must be at least 0"),
        ({"fused_credit": "no"}, "fused_credit must be True or False"),  # acted as True
        ({"credit": 7}, "credit must be a wb.CreditParams or a strategy name"),
        ({"credit": "bogus"}, "unknown credit strategy 'bogus'"),
    ],
)
def test_trl_trainer_checks_its_own_arguments_first(kwargs, match):
    pytest.importorskip("trl")
    from workbench.rl import RhythmGRPOTrainer

    with pytest.raises(WorkbenchError, match=match):
        RhythmGRPOTrainer(**kwargs)  # refused before TRL builds anything


def test_a_window_longer_than_the_shared_frame_reads_it_whole():
    """A pass's band is capped at the sequence (`reductions.StatsAccumulator`), so the
    shared frame of a batch shorter than the credit window keeps fewer diagonals than the
    window: its weights are those of ``window = T`` (no distance reaches T), not an error."""
    from workbench.attention.engine import SharedFrameCollector

    heads, P, comps = [(0, h) for h in range(4)], 5, [6, 3]
    spans, n = [(0, P + c, P) for c in comps], P + max(comps)
    scores = torch.randn(2, 4, n, n, generator=torch.Generator().manual_seed(0))
    probs = torch.softmax(scores.masked_fill(torch.ones(n, n).triu(1).bool(), -torch.inf), -1)
    out = {}
    for window in (40, n):
        # "local": the preplan tokens, read off WAAD
        credit = CreditParams(strategy="local", layers=[0]).replace(window=window, top_q=0.5)
        coll = SharedFrameCollector(spans, heads, 4, max_window=window, cuts=[10, 101])
        rows, idx = coll.by_layer[0]
        coll.feed(slice(0, n), probs, rows, idx)
        assert coll.acc.max_window == n
        fused = FusedCredit.__new__(FusedCredit)  # the collector alone, without a policy
        fused.credit, fused.spans, fused.collector = credit, spans, coll
        out[window] = fused.gammas(max(comps), seed=7)
    assert torch.equal(out[40], out[n]) and bool((out[n] > 1).any())


@pytest.mark.parametrize(
    ("config", "model", "field", "settings"),
    [
        # Phi-2's checkpoint: resid_pdrop 0.1 (nn.Dropout modules), no attention dropout
        ("PhiConfig", "PhiForCausalLM", "resid_pdrop", {"attention_dropout": 0.0}),
        # OPT's checkpoints: dropout 0.1 on the hidden states, applied functionally
        ("OPTConfig", "OPTForCausalLM", "dropout", {"attention_dropout": 0.0, "ffn_dim": 64}),
        # attention dropout, as before
        ("LlamaConfig", "LlamaForCausalLM", "attention_dropout", {}),
    ],
)
def test_any_dropout_that_reaches_the_attention_keeps_the_credit_standalone(
    config, model, field, settings
):
    """Dropout on the hidden states changes the attention of every later layer in a
    training forward as much as attention dropout does (on a 3-layer Phi with
    resid_pdrop 0.3 the fused coupled weights differed from the standalone pass at 9 of
    160 tokens, and from one call to the next): both trainers must take the standalone
    pass for it (`attention_dropout` is what they ask), and fuse a policy without any."""
    import transformers

    from workbench.rl.credit import attention_dropout

    base = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=32, **settings)  # fmt: skip
    cls, model_cls = getattr(transformers, config), getattr(transformers, model)
    off = {f: 0.0 for f in ("resid_pdrop", "embd_pdrop", "dropout", "attention_dropout")}
    plain = model_cls(cls(**{**base, **off}))
    assert attention_dropout(plain) is None, "no dropout: the fused pass serves"
    policy = model_cls(cls(**{**base, **off, field: 0.1}))
    assert attention_dropout(policy) == (field, 0.1)
    # A dropout module no config field names (a custom or patched model)
    plain.model.extra_dropout = torch.nn.Dropout(0.2)
    assert attention_dropout(plain) == ("model.extra_dropout", 0.2)
    # Built by hand on such a policy in train mode, the fused pass refuses by name (it
    # collected dropped-out statistics without a word); in eval mode it has none to fear.
    spans, ids = [(0, 8, 3)], [torch.arange(8)]
    fused = FusedCredit(policy.train(), CreditParams(layers=[0]), spans, ids)
    with pytest.raises(WorkbenchError, match=f"dropout in training \\({field}=0.1\\)") as e:
        fused.__enter__()
    assert "standalone pass" in e.value.fix
    with FusedCredit(policy.eval(), CreditParams(layers=[0]), spans, ids):
        policy(torch.arange(8)[None])


def test_a_multimodal_policy_gets_the_credit_of_its_language_model():
    """A multimodal policy (Gemma 3 with its vision tower) nests ``num_hidden_layers`` in its
    text config: `FusedCredit` failed with a raw AttributeError. Its credit and logits on
    text rollouts must be those of its language model alone (a `Gemma3ForCausalLM` with the
    same weights), sliding layers included."""
    from transformers import Gemma3Config, Gemma3ForCausalLM, Gemma3ForConditionalGeneration

    text = dict(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=16,
    )  # fmt: skip
    vision = dict(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        image_size=28, patch_size=14,
    )  # fmt: skip
    cfg = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4)
    torch.manual_seed(0)
    multimodal = Gemma3ForConditionalGeneration(cfg).eval()
    language = Gemma3ForCausalLM(cfg.text_config).eval()
    language.model.load_state_dict(multimodal.model.language_model.state_dict())
    language.lm_head.load_state_dict(multimodal.lm_head.state_dict())
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(4, 300, (40,), generator=gen).tolist()]
    completions = [torch.randint(4, 300, (n,), generator=gen).tolist() for n in (60, 35)]
    batch = rollout_batch(prompts, completions, 2, slice(0, 2))
    credit = CreditParams(strategy="coupled", layers="all")

    def credited(policy):
        fused = FusedCredit(policy, credit, batch.spans, batch.seqs)
        with torch.no_grad():
            return completion_logits(policy, batch, fused), fused.gammas(batch.width, seed=0)

    (logits, gamma), (want_logits, want_gamma) = credited(multimodal), credited(language)
    assert FusedCredit(multimodal, credit, batch.spans, batch.seqs).n_layers == 3
    torch.testing.assert_close(logits, want_logits)
    torch.testing.assert_close(gamma, want_gamma)
    assert (gamma > 1).any(), "the rollouts are long enough for some tokens to be credited"
