"""Export: a run as a Hugging Face LlamaForCausalLM computes gammaray's logits, with a tokenizer
that reads the run's tokens back."""

import shutil

import pytest
import torch

from trainers.checkpoint import checkpoint_root
from trainers.config import load_run_config
from trainers.data import build_source
from trainers.errors import ConfigError
from trainers.export import ExportError, encode_words, export_run, load_trained
from trainers.loop import train

FAST = ["train.batch_size=8", "train.seq_len=32", "train.threads=1"]


def trained(folder, *overrides, steps=3):
    config = load_run_config(None, [*FAST, f"train.tokens={steps * 8 * 32}", *overrides])
    return train(config, folder)


@pytest.mark.parametrize(
    ("preset", "tied"), [("tiny", False), ("tiny", True), ("1m", False), ("1m", True)], ids=str
)
def test_the_exported_model_gives_gammarays_logits(tmp_path, preset, tied):
    from transformers import LlamaForCausalLM

    result = trained(tmp_path / "run", f"model.preset={preset}", f"model.tie_embeddings={tied}")
    out = export_run(tmp_path / "run", tmp_path / "hf")
    run, model, step = load_trained(tmp_path / "run")
    assert step == result.steps  # the finished model, not an earlier checkpoint
    hf = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert sum(p.numel() for p in hf.parameters()) == result.n_params
    source = build_source(run.config.data, seq_len=run.config.train.seq_len, seed=run.config.seed)
    batch = torch.from_numpy(source.eval_batch())
    with torch.no_grad():
        ours, theirs = model(batch[:8, :-1]), hf(batch[:8, :-1]).logits
        # The weights are the run's last: they give its final eval loss.
        assert model.loss(batch).item() == pytest.approx(result.final_eval_loss, rel=1e-5)
    assert (ours - theirs).abs().max().item() < 1e-4


def test_the_tokenizer_reads_a_built_in_corpus_back(tmp_path):
    from transformers import AutoTokenizer

    trained(tmp_path / "run", "data.composite_fraction=0.1", steps=1)
    out = export_run(tmp_path / "run", tmp_path / "hf")
    run, _, _ = load_trained(tmp_path / "run")
    tokens = build_source(run.config.data, seq_len=32, seed=0).eval_batch()[0].tolist()
    text = encode_words(tokens, run.arch.vocab_size)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer(text)["input_ids"] == tokens
    assert tokenizer.decode(tokens) == text


def test_the_text_source_gets_a_byte_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("naïve café — the quick brown fox\n" * 200)
    trained(tmp_path / "run", "data.source=text", f"data.path={corpus}", steps=1)
    tokenizer = AutoTokenizer.from_pretrained(export_run(tmp_path / "run", tmp_path / "hf"))
    text = "naïve café —\n\x00\x7f"
    assert tokenizer(text)["input_ids"] == list(text.encode())
    assert tokenizer.decode(list(text.encode())) == text


def test_what_llama_cannot_express_is_refused_in_one_line(tmp_path):
    trained(tmp_path / "gated", "model.attn_gate=head", steps=1)
    with pytest.raises(ExportError, match=r"^model.attn_gate: 'head' gates have no Llama equivalent"):
        export_run(tmp_path / "gated", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    assert issubclass(ExportError, ConfigError)  # the CLI's one line and exit 2


def test_a_run_without_its_last_step_exports_only_a_named_step(tmp_path):
    result = trained(tmp_path / "run", "train.checkpoint_every=2", steps=5)
    shutil.rmtree(checkpoint_root(tmp_path / "run") / f"step-{result.steps:08d}")
    with pytest.raises(
        ExportError, match=r"finished at step 5, but its newest checkpoint is of step 4.*--step 4"
    ):
        export_run(tmp_path / "run", tmp_path / "hf")
    with pytest.raises(ExportError, match="no intact checkpoint of step 3"):
        export_run(tmp_path / "run", tmp_path / "hf", step=3)
    export_run(tmp_path / "run", tmp_path / "hf", step=4)
    assert '"step": 4' in (tmp_path / "hf" / "gammaray.json").read_text()
