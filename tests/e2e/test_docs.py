"""The user documentation says only what the code does: every example in docs/*.md is run or checked.

- ```yaml blocks holding metallb.io or core objects load and compile (and allocate) without a problem,
  unless an HTML comment right above the fence says what to expect:
  `<!-- invalid: expect "TEXT" -->` (an error whose text contains TEXT) or
  `<!-- warning: expect "TEXT" -->` (no error, a warning containing TEXT).
  `<!-- file: NAME -->` names a block: commands in ```sh blocks of the same page can read it as NAME,
  and `<!-- with: NAME, ... -->` compiles a block together with named blocks of the same page.
  `<!-- helm-values -->` marks a values file: it is checked against the chart's values.schema.json.
  ConfigurationState objects (what the daemons write) are checked against their model instead.
- ```bird blocks are parsed by the real BIRD 2 (`bird -p -c FILE`).
- `metallb-bgp validate|plan ...` lines in ```sh blocks run, in a folder holding a copy of examples/ and
  the page's named blocks; they must exit 0 (or as `<!-- exit: N -->` says), and a ```text block marked
  `<!-- output -->` right after must be exactly what the command printed.
- The generated regions (CRD reference, Helm values) are up to date, and relative links resolve.

Router snippets for FRR, Junos, IOS-XR and EOS cannot be checked here (no such software).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from metallb_bgp.api.loader import load_yaml
from metallb_bgp.core.config import last_good, rules
from metallb_bgp.core.plan.pipeline import make_plan
from metallb_bgp.core.snapshot import ClusterSnapshot
from metallb_bgp.gen import docs_reference
from metallb_bgp.gen.crds import ConfigurationState

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
BIRD = shutil.which("bird") or "/usr/sbin/bird"

_FENCE = re.compile(
    r"^(?P<indent>[ ]{0,3})```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.MULTILINE | re.DOTALL
)
_COMMENT = re.compile(r"<!--\s*(?P<key>[a-z-]+)(?::\s*(?P<value>.*?))?\s*-->")
_EXPECT = re.compile(r'^expect\s+"(?P<text>.*)"$')


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    body: str
    markers: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page.name}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """Fenced blocks of `page`, each with the HTML-comment markers on the lines right above its fence."""
    text = page.read_text()
    found = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").splitlines()
        markers: dict[str, str] = {}
        while before and before[-1].strip().startswith("<!--"):
            comment = _COMMENT.fullmatch(before.pop().strip())
            assert comment, f"{page.name}: malformed marker above line {text.count(chr(10), 0, match.start()) + 1}"
            markers[comment["key"]] = comment["value"] or ""
        line = text.count("\n", 0, match.start()) + 1
        body = textwrap.dedent(match["body"]) if match["indent"] else match["body"]  # a fence in a list item
        found.append(Block(page, line, match["lang"], body, markers))
    return found


ALL_BLOCKS = [block for page in PAGES for block in blocks(page)]


def _ids(items: list[Block]) -> list[str]:
    return [b.where for b in items]


def test_the_docs_pages_exist() -> None:
    names = {p.name for p in PAGES}
    assert {"installation.md", "configuration.md", "routers.md", "migration.md", "troubleshooting.md"} <= names


# --- YAML examples -------------------------------------------------------------------------------------------


def _is_cluster_yaml(block: Block) -> bool:
    if block.lang != "yaml" or "helm-values" in block.markers:
        return False
    try:
        docs = [d for d in yaml.safe_load_all(block.body) if isinstance(d, dict)]
    except yaml.YAMLError:
        return True  # broken YAML is a problem to report, not a reason to skip
    return any("apiVersion" in d and "kind" in d for d in docs)


YAML_BLOCKS = [b for b in ALL_BLOCKS if _is_cluster_yaml(b)]
NAMED = {(b.page, b.markers["file"]): b for b in ALL_BLOCKS if "file" in b.markers}


@dataclass(frozen=True)
class Outcome:
    errors: list[str]
    warnings: list[str]


def check_manifests(text: str, source: str) -> Outcome:
    """What `metallb-bgp validate` and `plan` would say about `text`: compile, then allocate and route."""
    objects, load_errors, states = [], [], []
    for parsed in load_yaml(text, source=source):
        objects += [parsed.obj] if parsed.obj is not None else []
        load_errors += list(parsed.errors)
    for doc in yaml.safe_load_all(text):
        items = doc.get("items", []) if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
        for item in items:
            if isinstance(item, dict) and item.get("kind") == "ConfigurationState":
                states.append(ConfigurationState.model_validate(item))  # raises if the example does not fit
    load_errors = [e for e in load_errors if not (e.kind == "ConfigurationState" and e.field == "apiVersion")]
    snapshot = ClusterSnapshot.from_objects(objects, errors=load_errors)
    nodes = [n.name for n in snapshot.nodes] or ["node-1"]
    plan = make_plan(snapshot, node_name=nodes[0])
    problems = [*plan.problems]
    errors = [str(p) for p in problems if p.is_error]
    errors += [f"Service {key}: not allocated: {reason}" for key, reason in plan.allocation.refusals.items()]
    return Outcome(errors=errors, warnings=[str(p) for p in problems if not p.is_error])


def _expected(block: Block, key: str) -> str:
    match = _EXPECT.match(block.markers[key])
    assert match, f'{block.where}: write <!-- {key}: expect "TEXT" -->'
    return match["text"]


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=_ids(YAML_BLOCKS))
def test_yaml_example_compiles_as_the_page_says(block: Block) -> None:
    companions = [n.strip() for n in block.markers.get("with", "").split(",") if n.strip()]
    texts = [NAMED[(block.page, name)].body for name in companions if (block.page, name) in NAMED]
    assert len(texts) == len(companions), f"{block.where}: with: names a block no <!-- file: --> marker names"
    outcome = check_manifests("\n---\n".join([*texts, block.body]), source=block.where)
    if "invalid" in block.markers:
        expected = _expected(block, "invalid")
        assert outcome.errors, f"{block.where}: marked invalid, but it compiles"
        assert any(expected in e for e in outcome.errors), f"{block.where}: {expected!r} not in {outcome.errors}"
    elif "warning" in block.markers:
        expected = _expected(block, "warning")
        assert not outcome.errors, f"{block.where}: {outcome.errors}"
        assert any(expected in w for w in outcome.warnings), f"{block.where}: {expected!r} not in {outcome.warnings}"
    else:
        assert outcome == Outcome([], []), f"{block.where}: {outcome}"


HELM_BLOCKS = [b for b in ALL_BLOCKS if "helm-values" in b.markers]


def _merged(base: object, override: object) -> object:
    if isinstance(base, dict) and isinstance(override, dict):
        return {**base, **{k: _merged(base.get(k), v) for k, v in override.items()}}
    return override


@pytest.mark.parametrize("block", HELM_BLOCKS, ids=_ids(HELM_BLOCKS))
def test_helm_values_example_fits_the_chart_schema(block: Block) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    chart = ROOT / "charts" / "metallb-bgp"
    if not (chart / "values.schema.json").is_file():
        pytest.skip("the chart is not in this tree")
    defaults = yaml.safe_load((chart / "values.yaml").read_text())
    values = _merged(defaults, yaml.safe_load(block.body) or {})
    jsonschema.validate(values, json.loads((chart / "values.schema.json").read_text()))


def test_marked_wrong_examples_exist_so_the_markers_are_exercised() -> None:
    assert any("invalid" in b.markers for b in YAML_BLOCKS)
    assert any("file" in b.markers for b in YAML_BLOCKS)


# --- BIRD configurations ----------------------------------------------------------------------------------------

BIRD_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "bird"]


def _require_bird() -> None:
    if Path(BIRD).exists():
        return
    if os.environ.get("CI"):
        pytest.fail("BIRD 2 is not installed (apt-get install bird2): the docs' BIRD examples cannot be checked")
    pytest.skip("BIRD 2 is not installed (apt-get install bird2)")


@pytest.mark.parametrize("block", BIRD_BLOCKS, ids=_ids(BIRD_BLOCKS))
def test_bird_example_is_accepted_by_bird(block: Block, tmp_path: Path) -> None:
    _require_bird()
    config = tmp_path / "bird.conf"
    config.write_text(block.body)
    result = subprocess.run([BIRD, "-p", "-c", str(config)], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, f"{block.where}: {result.stderr or result.stdout}"


def test_routers_page_has_bird_examples() -> None:
    assert any(b.page.name == "routers.md" for b in BIRD_BLOCKS)


# --- metallb-bgp commands ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    block: Block
    argv: list[str]
    output: Block | None  # a ```text block marked <!-- output --> right after


def _command_lines(body: str) -> Iterator[str]:
    logical = ""
    for raw in body.splitlines():
        line = raw.strip()
        logical += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            if logical.startswith("$ "):
                logical = logical[2:]
            yield logical.split(" #", 1)[0].strip()
            logical = ""


def commands() -> list[Command]:
    found = []
    for page in PAGES:
        page_blocks = blocks(page)
        for i, block in enumerate(page_blocks):
            if block.lang not in ("sh", "shell", "console", "bash") or "not-run" in block.markers:
                continue
            following = page_blocks[i + 1] if i + 1 < len(page_blocks) else None
            output = following if following is not None and "output" in following.markers else None
            lines = [shlex.split(line) for line in _command_lines(block.body)]
            ours = [argv for argv in lines if argv[:1] == ["metallb-bgp"] and argv[1:2] in (["validate"], ["plan"])]
            assert output is None or len(ours) == 1, f"{block.where}: an <!-- output --> block needs exactly one command"
            found += [Command(block, argv, output) for argv in ours]
    return found


COMMANDS = commands()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a reader has: the repository's examples/ folder."""
    directory = tmp_path_factory.mktemp("docs")
    shutil.copytree(ROOT / "examples", directory / "examples", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return directory


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.block.where}:{' '.join(c.argv[1:3])}" for c in COMMANDS])
def test_documented_command_runs_as_shown(command: Command, workdir: Path, tmp_path: Path) -> None:
    here = tmp_path / "cwd"
    shutil.copytree(workdir, here)
    for (page, name), named in NAMED.items():
        if page == command.block.page:
            (here / name).parent.mkdir(parents=True, exist_ok=True)
            (here / name).write_text(named.body)
    result = subprocess.run(
        [sys.executable, "-m", "metallb_bgp.cli", *command.argv[1:]],
        capture_output=True, text=True, timeout=60, cwd=here, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    printed = result.stdout + result.stderr
    assert "Traceback" not in printed
    expected_status = int(command.block.markers.get("exit", "0"))
    assert result.returncode == expected_status, f"{command.block.where}: {' '.join(command.argv)}\n{printed}"
    if command.output is not None:
        assert printed.rstrip("\n") == command.output.body.rstrip("\n"), f"{command.output.where}: output differs"


def test_docs_show_validate_and_plan() -> None:
    shown = {c.argv[1] for c in COMMANDS}
    assert {"validate", "plan"} <= shown
    assert any(c.output is not None for c in COMMANDS)


# --- generated regions, quoted texts, links -------------------------------------------------------------------


def test_generated_reference_and_helm_values_are_up_to_date() -> None:
    stale = docs_reference.stale_files(DOCS)
    assert not stale, f"out of date: {[p.name for p in stale]}; run: {docs_reference.COMMAND}"


def test_every_model_field_has_words_in_the_reference() -> None:
    text = docs_reference.reference_markdown()  # raises DocsGenerationError when a field has no description
    for path in ("spec.peerAddress", "spec.holdTime", "spec.addresses", "spec.aggregationLength", "status.errors"):
        assert f"`{path}`" in text


def test_a_field_without_words_stops_the_generator() -> None:
    from pydantic import BaseModel

    class Spec(BaseModel):
        new_field: int = 0

    with pytest.raises(docs_reference.DocsGenerationError, match="spec.new_field: no description"):
        docs_reference._rows("IPAddressPool", Spec, "spec.", {})  # noqa: SLF001 - the rule under test


def test_a_region_without_its_markers_is_an_error_not_a_silent_skip() -> None:
    with pytest.raises(docs_reference.DocsGenerationError, match="crd-reference"):
        docs_reference.replace_region("# no markers here\n", "crd-reference", "table")
    marked = "a\n<!-- BEGIN GENERATED: x (cmd) -->\nold\n<!-- END GENERATED: x -->\nb\n"
    assert docs_reference.replace_region(marked, "x", "new") == marked.replace("old", "new")


def test_values_comments_attach_prose_to_keys_and_skip_commented_out_yaml() -> None:
    text = "# The image.\nimage:\n  # Default: appVersion.\n  tag: ''\npulls: []\n#  - name: x\nother: 1\n"
    assert docs_reference.values_comments(text) == {"image": "The image.", "image.tag": "Default: appVersion."}


def test_the_reference_states_what_exabgp_ignores() -> None:
    text = docs_reference.reference_markdown()
    for field_name in ("spec.keepaliveTime", "spec.connectTime"):
        row = next(line for line in text.splitlines() if line.startswith(f"| `{field_name}`"))
        assert "Not supported by ExaBGP" in row


def test_helm_values_table_comes_from_the_chart_when_present() -> None:
    text = (DOCS / "installation.md").read_text()
    if (ROOT / "charts" / "metallb-bgp" / "values.schema.json").is_file():
        assert "| `image.repository` |" in text
    else:
        assert "Not generated yet" in text


def test_troubleshooting_quotes_the_compilers_own_words() -> None:
    text = (DOCS / "troubleshooting.md").read_text()
    for quoted in (rules.L2_IGNORED, last_good.KEEPING_LAST_VALID):
        assert quoted in text


def test_log_events_in_the_troubleshooting_table_are_logged_by_the_code() -> None:
    page = (DOCS / "troubleshooting.md").read_text()
    table = page[page.index("## Logs") : page.index("## Metrics")]
    first_cells = re.findall(r"^\| ([^|]+) \|", table, flags=re.MULTILINE)
    names = {name for cell in first_cells for name in re.findall(r"`([a-z_]+)`", cell)}
    source = "\n".join(p.read_text() for p in (ROOT / "metallb_bgp").rglob("*.py"))
    assert names, "the Logs table lists no events"
    missing = sorted(name for name in names if f'"{name}"' not in source)
    assert not missing, f"documented log events no code emits: {missing}"


_LINK = re.compile(r"(?<!!)\[[^\]]*\]\((?P<target>[^)\s]+)\)")
_CODE = re.compile(r"^```.*?^```|`[^`\n]*`", re.MULTILINE | re.DOTALL)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as dashes."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*$", text, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        found.add(slug)
    return found


LINKS = [
    (page, match["target"])
    for page in PAGES
    for match in _LINK.finditer(_CODE.sub("", page.read_text()))
    if not re.match(r"^[a-z]+:", match["target"])
]


@pytest.mark.parametrize(("page", "target"), LINKS, ids=[f"{p.name}->{t}" for p, t in LINKS])
def test_relative_link_resolves(page: Path, target: str) -> None:
    path_part, _, anchor = target.partition("#")
    resolved = (page.parent / path_part).resolve() if path_part else page
    assert resolved.exists(), f"{page.name}: {target} does not exist"
    if anchor and resolved.suffix == ".md":
        assert anchor in anchors(resolved), f"{page.name}: no heading for #{anchor} in {resolved.name}"
