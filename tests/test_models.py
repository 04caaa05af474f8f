"""Model names -> directories (alias, repo, local, gguf, imported, default), and the `models`,
`pull` and `rm` commands through `qwenchat.cli.run`."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import pytest

from qwenchat import catalog, hub, paths
from qwenchat.cli import run
from qwenchat.errors import HubError
from qwenchat.models import default_model_name, list_models, resolve_model
from tests.hub.fake_hub import FakeHub, fake_hub  # noqa: F401

ALIAS = "qwen2.5-0.5b-instruct"
ALIAS_REPO = "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.fixture
def served(fake_hub: FakeHub, tiny_models) -> FakeHub:  # noqa: F811
    fake_hub.add_repo(ALIAS_REPO, tiny_models["qwen25_05b"])
    fake_hub.add_repo("acme/tiny", tiny_models["base"])
    return fake_hub


# --------------------------------------------------------------------------- names


def test_catalog_has_the_five_seed_models() -> None:
    assert catalog.DEFAULT_ALIAS == ALIAS
    assert {e.repo_id for e in catalog.CATALOG.values()} == {
        "Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2-0.5B-Instruct", "Qwen/Qwen2-1.5B-Instruct",
        "Qwen/Qwen2-0.5B", "Qwen/Qwen2-1.5B",
    }
    assert catalog.lookup("Qwen2-0.5B").repo_id == "Qwen/Qwen2-0.5B"
    assert catalog.alias_for_repo("qwen/qwen2-1.5b") == "qwen2-1.5b"


def test_local_directory(tiny_model: Path, tmp_path: Path) -> None:
    model = resolve_model(str(tiny_model))
    assert model.source == "local" and model.path == tiny_model.resolve() and model.repo_id is None
    with pytest.raises(HubError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_unknown_name_suggests_close_aliases() -> None:
    with pytest.raises(HubError, match="unknown model 'qwen2.5-05b-instruct'") as err:
        resolve_model("qwen2.5-05b-instruct")
    assert "did you mean qwen2.5-0.5b-instruct" in err.value.hint


@pytest.mark.parametrize("path", ["/tmp/no/such/model", "./nope", "~/nope-model",
                                  "~nosuchuser0/model"])  # no such user: a RuntimeError traceback before
def test_a_missing_path_is_said_to_be_missing_not_an_unknown_model(path: str) -> None:
    """`serve -m /tmp/nope` said "unknown model '/tmp/nope'" with alias suggestions (found hands-on)."""
    with pytest.raises(HubError, match="does not exist") as err:
        resolve_model(path)
    assert "unknown model" not in str(err.value) and "check the path" in err.value.hint


def test_bad_repo_id() -> None:
    with pytest.raises(HubError, match="not a Hub repo id"):
        resolve_model("acme/tiny@")


def test_default_model_env_then_config_then_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_model_name() == ALIAS
    cfg = paths.config_file()
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text('model = "qwen2-0.5b"\n')
    assert default_model_name() == "qwen2-0.5b"
    monkeypatch.setenv("QWENCHAT_MODEL", "qwen2-1.5b")
    assert default_model_name() == "qwen2-1.5b"


def test_none_resolves_the_default(served: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWENCHAT_MODEL", "acme/tiny")
    model = resolve_model(None)
    assert model.name == "acme/tiny" and model.source == "hub"


def test_gguf_is_imported_once_and_reused(tiny_model: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The converter is faked here (its own tests live with the engine); what is tested is that
    a .gguf name imports into imported_models_dir() once and reuses it while the file is unchanged."""
    import qwenchat.engine.gguf as gguf

    calls: list[Path] = []

    def fake_import(gguf_path: Path, out_dir: Path, *, dtype: str = "float32", progress=None) -> Path:
        calls.append(Path(gguf_path))
        assert dtype == "float32"
        shutil.copytree(tiny_model, out_dir, dirs_exist_ok=True)
        st = Path(gguf_path).stat()
        (out_dir / gguf.IMPORT_RECORD).write_text(json.dumps({
            "format_version": gguf.IMPORT_FORMAT_VERSION, "source": str(Path(gguf_path).resolve()),
            "size": st.st_size, "mtime_ns": st.st_mtime_ns, "dtype": dtype,
        }))
        return out_dir

    monkeypatch.setattr(gguf, "import_gguf", fake_import)
    file = tmp_path / "Tiny-Qwen Q8_0.gguf"
    file.write_bytes(b"GGUF fake")
    first = resolve_model(str(file))
    assert first.source == "gguf" and first.path.parent == paths.imported_models_dir()
    assert (first.path / "config.json").is_file()
    assert resolve_model(str(file)) == first and len(calls) == 1
    # by its imported name, too
    assert resolve_model(first.name).path == first.path
    # a changed file is imported again
    file.write_bytes(b"GGUF fake, but longer")
    resolve_model(str(file))
    assert len(calls) == 2
    with pytest.raises(HubError, match="does not exist"):
        resolve_model(str(tmp_path / "absent.gguf"))


# --------------------------------------------------------------------------- commands


def test_models_command_lists_aliases_and_downloads(served: FakeHub, capsys, tiny_model: Path) -> None:
    resolve_model("acme/tiny")
    imported = paths.imported_models_dir() / "my-import"
    shutil.copytree(tiny_model, imported)
    capsys.readouterr()
    assert run(["models"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split("\t")[0]: line.split("\t") for line in out[1:]}
    assert out[0].split("\t") == ["NAME", "REPO", "SIZE", "OFFLINE", "LOCATION"]
    assert rows[f"{ALIAS} (default)"][1:] [0] == ALIAS_REPO
    assert rows[f"{ALIAS} (default)"][3] == "no" and rows[f"{ALIAS} (default)"][4] == "not downloaded"
    assert len([r for r in rows if r.split()[0] in catalog.CATALOG]) == 5
    assert rows["acme/tiny"][3] == "yes" and rows["acme/tiny"][2].endswith("MB")
    assert rows["my-import"][3] == "yes" and rows["my-import"][4] == str(imported)
    names = [e.name for e in list_models()]
    assert names[:5] == list(catalog.CATALOG)


def test_pull_shows_progress_on_stderr_and_then_works_offline(
    served: FakeHub, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(["pull", ALIAS]) == 0
    err = capsys.readouterr().err
    assert f"{ALIAS}: ready at" in err and "model.safetensors" in err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    served.stop()
    assert resolve_model(ALIAS).source == "alias"
    assert run(["pull", ALIAS]) == 0  # offline with the model cached: nothing to do, no error


def test_pull_errors_are_messages_not_tracebacks(served: FakeHub, capsys) -> None:
    assert run(["pull", "acme/missing"]) == 1
    err = capsys.readouterr().err
    assert "error: model repo acme/missing was not found" in err and "Traceback" not in err
    assert run(["pull", "qwen25"]) == 1
    assert "unknown model" in capsys.readouterr().err


def test_pull_ctrl_c_exits_130(served: FakeHub, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    from qwenchat.cli import models as cli_models

    def interrupt(self, filename, file_done, file_total, done, total):
        if filename == "model.safetensors":
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_models.RichDownloadProgress, "on_bytes", interrupt)
    assert run(["pull", "acme/tiny"]) == 130
    assert hub.cached_snapshot("acme/tiny") is None
    assert not list(hub.repo_cache_path("acme/tiny").rglob("*.incomplete"))


def test_rm_needs_confirmation(served: FakeHub, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    resolve_model("acme/tiny")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no terminal
    assert run(["rm", "acme/tiny"]) == 2
    assert "--yes" in capsys.readouterr().err
    assert hub.cached_snapshot("acme/tiny") is not None

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Tty("n\n"))
    assert run(["rm", "acme/tiny"]) == 0
    assert hub.cached_snapshot("acme/tiny") is not None
    monkeypatch.setattr(sys, "stdin", Tty("y\n"))
    assert run(["rm", "acme/tiny"]) == 0
    assert not hub.repo_cache_path("acme/tiny").exists()


def test_rm_yes_removes_alias_and_imported(served: FakeHub, capsys, tiny_model: Path) -> None:
    resolve_model(ALIAS)
    assert run(["rm", ALIAS, "--yes"]) == 0
    assert f"removed {ALIAS}" in capsys.readouterr().err
    assert not hub.repo_cache_path(ALIAS_REPO).exists()
    assert run(["rm", ALIAS, "--yes"]) == 1
    assert "not downloaded" in capsys.readouterr().err
    imported = paths.imported_models_dir() / "mine"
    shutil.copytree(tiny_model, imported)
    assert run(["rm", "mine", "-y"]) == 0
    assert not imported.exists()
    assert run(["rm", "nothing-like-it", "-y"]) == 1


def _write_tiny_gguf(model_dir: Path, out: Path) -> None:
    """A real (unquantized) qwen2 GGUF of a tiny model, written with gguf-py's GGUFWriter."""
    import numpy as np
    from gguf import GGUFWriter
    from safetensors.numpy import load_file

    cfg = json.loads((model_dir / "config.json").read_text())
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    vocab = {**tok["model"]["vocab"], **{t["content"]: t["id"] for t in tok["added_tokens"]}}
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {t["content"] for t in tok["added_tokens"] if t["special"]}
    plain_added = {t["content"] for t in tok["added_tokens"] if not t["special"]}
    tokens += [f"[PAD{i}]" for i in range(len(tokens), cfg["vocab_size"])]
    types = [3 if t in special else 4 if t in plain_added or t.startswith("[PAD") else 1 for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]

    w = GGUFWriter(str(out), "qwen2")
    w.add_name("tiny-qwen")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab["<|endoftext|>"])
    w.add_eos_token_id(vocab["<|endoftext|>"])
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    layer = {
        "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
        "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
        "self_attn.o_proj.weight": "attn_output.weight", "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
    }
    for name, array in load_file(str(model_dir / "model.safetensors")).items():
        if name in names:
            gguf_name = names[name]
        else:
            _, _, n, rest = name.split(".", 3)
            gguf_name = f"blk.{n}.{layer[rest]}"
        w.add_tensor(gguf_name, np.ascontiguousarray(array, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_real_tiny_gguf_converts_once_through_the_engine_importer(tiny_models, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.numpy import load_file

    import qwenchat.engine.gguf as gguf

    src = tiny_models["base"]
    file = tmp_path / "tiny-qwen-f32.gguf"
    _write_tiny_gguf(src, file)
    model = resolve_model(str(file))
    assert model.source == "gguf" and (model.path / gguf.IMPORT_RECORD).is_file()
    got = load_file(str(model.path / "model.safetensors"))
    want = load_file(str(src / "model.safetensors"))
    assert set(got) == set(want)
    for name in want:
        assert (got[name] == want[name]).all(), name

    def no_second_import(*a, **k):
        raise AssertionError("the unchanged GGUF was converted again")

    monkeypatch.setattr(gguf, "import_gguf", no_second_import)
    assert resolve_model(str(file)) == model


def test_alias_with_revision(served: FakeHub) -> None:
    commit = served.repos[ALIAS_REPO].commit
    model = resolve_model(f"{ALIAS}@{commit}")
    assert model.source == "alias" and model.revision == commit and model.name == f"{ALIAS}@{commit}"
    with pytest.raises(HubError, match="revision 'v9' was not found"):
        resolve_model(f"{ALIAS}@v9")


def test_models_marks_a_default_that_no_alias_or_download_stands_for(
    tiny_model: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A default set to a folder, a .gguf file or a Hub model not downloaded had no row, so no
    row said "(default)" and the table read as if nothing were chosen."""
    def rows() -> dict[str, list[str]]:
        capsys.readouterr()
        assert run(["models"]) == 0
        return {line.split("\t")[0]: line.split("\t") for line in capsys.readouterr().out.splitlines()[1:]}

    monkeypatch.setenv("QWENCHAT_MODEL", str(tiny_model))
    got = rows()
    assert got[f"{tiny_model} (default)"][1:] == ["folder", got[f"{tiny_model} (default)"][2], "yes", str(tiny_model)]
    assert got[f"{tiny_model} (default)"][2] != "-" and not any("(default)" in n for n in got if n != f"{tiny_model} (default)")
    gguf = tmp_path / "gone.gguf"
    monkeypatch.setenv("QWENCHAT_MODEL", str(gguf))
    assert rows()[f"{gguf} (default)"][1:] == ["GGUF file", "-", "no", "missing"]
    monkeypatch.setenv("QWENCHAT_MODEL", "acme/Not-Yet")
    assert rows()["acme/Not-Yet (default)"][1:] == ["acme/Not-Yet", "-", "no", "not downloaded"]
    monkeypatch.setenv("QWENCHAT_MODEL", f"{ALIAS_REPO.upper()}@main")  # the alias's repo, another spelling
    assert f"{ALIAS} (default)" in rows()
