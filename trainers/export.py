"""``gammaray export``: a trained run as a Hugging Face ``LlamaForCausalLM`` folder.

gammaray's decoder is a Llama (RMSNorm, RoPE with halves rotated, SwiGLU, untied or tied head,
no biases), so a checkpoint maps onto ``LlamaForCausalLM`` tensor by tensor and the exported
model computes the same logits. The folder holds ``config.json``, ``model.safetensors``, a
tokenizer for the run's data source, and ``gammaray.json`` (which run, which step).

Tokenizers: the byte-level ``text`` source gets a byte tokenizer (id = byte value); the built-in
corpora get a word-level one over names of their ids, written as space-separated words: content
symbol ``i`` is ``"i"`` (in the composite task, the number ``i``), the reserved ids are
``<pad>``, ``<fact>``, ..., ``<P>``, ``<sep>``, ``<a1>``..``<a4>`` (``trainers.data.vocab``).
A ``memmap`` source's ids have no text: it is refused. So are models with attention gates,
which Llama does not have.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from trainers.backends.deepspeed_backend import CHECKPOINT_TAG
from trainers.backends.torch_backend import STATE_FILE
from trainers.checkpoint import checkpoints_newest_first, damage
from trainers.config import ResolvedRun, load_run_config, resolve
from trainers.data import vocab
from trainers.errors import ConfigError
from trainers.loop import read_summary
from trainers.model import Architecture, Transformer
from trainers.run_folder import CONFIG_FILE

EXPORT_INFO = "gammaray.json"
RESERVED_NAMES = {
    vocab.PAD: "<pad>",
    vocab.FACT: "<fact>",
    vocab.RULE: "<rule>",
    vocab.COPY: "<copy>",
    vocab.TEXT: "<text>",
    vocab.COMPOSITE: "<P>",
    vocab.SEP: "<sep>",
    **{token: f"<a{i}>" for i, token in enumerate(vocab.ANCHORS, start=1)},
}


class ExportError(ConfigError):
    """The run cannot be exported (not trained, no such step, a model Llama cannot express)."""


def token_names(vocab_size: int) -> list[str]:
    """The word of every id of a built-in corpus's vocabulary (see the module docstring)."""
    unused = {i: f"<unused{i}>" for i in range(vocab.CONTENT) if i not in RESERVED_NAMES}
    names = {**RESERVED_NAMES, **unused}
    return [names[i] for i in range(vocab.CONTENT)] + [str(i) for i in range(vocab.n_content(vocab_size))]


def encode_words(tokens: Any, vocab_size: int) -> str:
    """Token ids of a built-in corpus as the text its exported tokenizer reads back."""
    names = token_names(vocab_size)
    return " ".join(names[int(t)] for t in tokens)


def load_trained(run_dir: str | Path, step: int | None = None) -> tuple[ResolvedRun, Transformer, int]:
    """The run in ``run_dir`` with the weights of its newest checkpoint (or of ``step``), in fp32
    on the CPU, in eval mode; and the step they are from. A finished run's newest checkpoint is
    its last step, or it is refused (unless ``step`` is given)."""

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise ExportError(f"{run_dir}: not a run folder (no {CONFIG_FILE})")
    run = resolve(load_run_config(run_dir / CONFIG_FILE))
    checkpoints = [c for c in checkpoints_newest_first(run_dir) if damage(c) is None]
    if step is not None:
        checkpoints = [c for c in checkpoints if c.name == f"step-{step:08d}"]
    if not checkpoints:
        which = f"step {step}" if step is not None else "any step"
        raise ExportError(f"{run_dir}: no intact checkpoint of {which}")
    checkpoint = checkpoints[0]
    at_step = int(checkpoint.name.removeprefix("step-"))
    summary = read_summary(run_dir)
    if step is None and summary is not None and summary.steps != at_step:
        raise ExportError(
            f"{run_dir}: the run finished at step {summary.steps}, but its newest checkpoint is of step "
            f"{at_step} (it was trained before finished runs kept their last step); pass --step "
            f"{at_step} to export that one"
        )
    model = Transformer(run.arch)
    model.load_state_dict(_model_state(checkpoint, run))
    model.eval()
    return run, model, at_step


def _model_state(checkpoint: Path, run: ResolvedRun) -> dict[str, torch.Tensor]:
    if run.config.train.backend == "deepspeed":
        # Every ZeRO stage: the full fp32 weights gathered from the shards (no process group needed).
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag=CHECKPOINT_TAG)
    else:
        state = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)["model"]
    return {name: tensor.float() for name, tensor in state.items()}


def hf_config(arch: Architecture) -> dict[str, Any]:
    """``config.json`` of the ``LlamaForCausalLM`` that computes what ``arch`` computes."""
    if arch.attn_gate != "off":
        raise ExportError(
            f"model.attn_gate: {arch.attn_gate!r} gates have no Llama equivalent; only models "
            "without attention gates can be exported"
        )
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": arch.vocab_size,
        "hidden_size": arch.d_model,
        "intermediate_size": arch.d_ff,
        "num_hidden_layers": arch.n_layers,
        "num_attention_heads": arch.n_heads,
        "num_key_value_heads": arch.n_heads,
        "head_dim": arch.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": arch.seq_len,
        "rms_norm_eps": arch.norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": arch.rope_theta},
        "rope_theta": arch.rope_theta,  # for readers older than rope_parameters
        "tie_word_embeddings": arch.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "float32",
        "bos_token_id": None,
        "eos_token_id": 0,  # see export_run
        "pad_token_id": 0,
    }


def hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """gammaray's tensors under ``LlamaForCausalLM``'s names (a tied head is stored once)."""
    renamed = {"model.embed_tokens.weight": model.embed.weight, "model.norm.weight": model.final_norm.weight}
    for i, block in enumerate(model.blocks):
        prefix = f"model.layers.{i}"
        renamed[f"{prefix}.input_layernorm.weight"] = block.attn_norm.weight
        renamed[f"{prefix}.post_attention_layernorm.weight"] = block.mlp_norm.weight
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            renamed[f"{prefix}.self_attn.{name}.weight"] = getattr(block.attn, name).weight
        for name in ("gate_proj", "up_proj", "down_proj"):
            renamed[f"{prefix}.mlp.{name}.weight"] = getattr(block.mlp, name).weight
    if not model.arch.tie_embeddings:
        renamed["lm_head.weight"] = model.lm_head.weight
    return {name: tensor.detach().float().contiguous().clone() for name, tensor in renamed.items()}


def build_tokenizer(run: ResolvedRun) -> Any:
    """A ``tokenizers.Tokenizer`` for the run's data source (see the module docstring)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    source = run.config.data.source
    if source == "memmap":
        raise ExportError(
            "data.source: a memmap source's token ids have no text, so no tokenizer can be written"
        )
    if source == "text":
        # Byte-level BPE without merges: each byte is one token whose id is the byte's value.
        chars = _byte_chars()
        tokenizer = Tokenizer(models.BPE(vocab={chars[b]: b for b in range(256)}, merges=[]))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tokenizer.decoder = decoders.ByteLevel()
        return tokenizer
    names = token_names(run.arch.vocab_size)
    tokenizer = Tokenizer(models.WordLevel(vocab={n: i for i, n in enumerate(names)}, unk_token="<pad>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # decoding joins the words with spaces
    return tokenizer


def _byte_chars() -> list[str]:
    """GPT-2's printable stand-in for each byte, the alphabet of byte-level tokenizers: printable
    bytes stand for themselves, the others for the characters from U+0100 on, in order."""
    printable = {
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    }
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def export_run(run_dir: str | Path, out_dir: str | Path, step: int | None = None) -> Path:
    """Write the run in ``run_dir`` (newest checkpoint, or ``step``) as a Hugging Face model
    folder ``out_dir``; returns it. Needs the ``eval`` extra (safetensors, tokenizers, transformers)."""
    try:
        from safetensors.torch import save_file
        from transformers import PreTrainedTokenizerFast
    except ImportError as missing:
        raise ExportError(
            f"export needs the eval extra ({missing.name} is not installed): pip install 'gammaray[eval]'"
        ) from None
    run, model, at_step = load_trained(run_dir, step)
    config = hf_config(run.arch)
    tokenizer = build_tokenizer(run)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(hf_state_dict(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    # Id 0 (never emitted by the built-in corpora; the NUL byte in text) stands in for the end
    # of text and padding, which the harness needs to name.
    end = tokenizer.id_to_token(0)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=end, pad_token=end).save_pretrained(
        str(out)
    )
    info = {"run_id": run.run_id, "step": at_step, "run_dir": str(Path(run_dir).resolve())}
    (out / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return out
