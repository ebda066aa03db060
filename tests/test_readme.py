"""The README's examples run as written, and its commands match the project's."""

from __future__ import annotations

import os
import re
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
TEST_COMMAND = "pip install -e '.[test]' && pytest"


def readme() -> str:
    with open(README, encoding="utf-8") as f:
        return f.read()


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}[ \t]*\n(.*?)^```", readme(), re.S | re.M)


def test_python_examples_run_in_order(tmp_path, monkeypatch, capsys):
    blocks = code_blocks("python")
    assert len(blocks) >= 2, "the README should have Python examples"
    shutil.copytree(os.path.join(ROOT, "examples"), tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the message points at the failing block
            pytest.fail(f"README python block {i + 1} failed: {exc!r}\n{block}")
    out = capsys.readouterr().out
    assert "ms" in out
    # the examples left what they promise
    assert (tmp_path / "out" / "run1" / "flows.arrows").is_file()
    assert (tmp_path / "out" / "run1" / "links.h5").is_file()
    assert (tmp_path / "out" / "small" / "summary.json").is_file()


def test_quick_start_commands():
    bash = "\n".join(code_blocks("bash"))
    assert "pip install . && fabricsim reproduce --quick" in bash.splitlines()[0]
    assert TEST_COMMAND in bash
    assert os.path.isfile(os.path.join(ROOT, "examples", "small.toml"))


def _quickstart_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("quickstart", os.path.join(ROOT, ".ci", "quickstart.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ci_runs_the_readme_quick_start_in_order():
    """CI extracts the two quick-start commands from the README and runs them, in order."""
    commands = _quickstart_module().quickstart_commands(readme())
    assert commands == ["pip install . && fabricsim reproduce --quick", TEST_COMMAND]
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci = f.read()
    assert "python .ci/quickstart.py README.md" in ci
    first, second = ci.index('"${commands[0]}"'), ci.index('"${commands[1]}"')
    assert first < second
    assert "bash .ci/reinstall" in ci[second:]


def test_quickstart_extraction_needs_the_section():
    qs = _quickstart_module()
    with pytest.raises(SystemExit):
        qs.quickstart_commands("# x\n## Usage\n```bash\nls\n```\n## End\n")
    assert qs.quickstart_commands("## Quick start\n\n```bash\na && b\n# note\nc\n```\n## Next\n") == \
        ["a && b", "c"]


def test_readme_small_toml_block_matches_example():
    """The README shows examples/small.toml: the shown table is the file's content."""
    shown = code_blocks("toml")
    assert shown, "the README should show a scenario file"
    with open(os.path.join(ROOT, "examples", "small.toml"), encoding="utf-8") as f:
        body = [ln for ln in f.read().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert [ln for ln in shown[0].splitlines() if ln.strip()] == body


def test_readme_error_example_is_real(tmp_path, capsys):
    """The README's sample error line is what the CLI prints for k = 7."""
    m = re.search(r"^(fabricsim: error: fabric\.k: .*)$", readme(), re.M)
    assert m
    from fabricsim.cli import main

    scen = tmp_path / "bad.toml"
    scen.write_text('[fabric]\nhosts = 16\ngpus_per_server = 4\nk = 7\n[traffic]\nsize_bytes = 1\n')
    assert main(["run", str(scen), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == m.group(1)


def test_workload_commands_run(capsys):
    """Every ``fabricsim workload`` line of the README's bash blocks runs and exits 0."""
    import shlex

    from fabricsim.cli import main

    lines = [ln.strip() for block in code_blocks("bash") for ln in block.splitlines()
             if ln.strip().startswith("fabricsim workload")]
    assert len(lines) >= 3
    for line in lines:
        assert main(shlex.split(line)[1:]) == 0, line
    capsys.readouterr()


def test_model_toml_example_loads(tmp_path):
    """The README's model-file example is a valid model."""
    from fabricsim.workload import get_model

    block = next(b for b in code_blocks("toml") if "routed_experts" in b)
    path = tmp_path / "my-moe.toml"
    path.write_text(block)
    m = get_model(str(path))
    assert m.name == "my-moe" and m.moe_layers == 23
