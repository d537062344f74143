"""The tables tool on hostile records: values that are not what a record holds are skipped with a warning naming
their file; names reach markdown, LaTeX and the shell hints escaped; only regular, small files are read."""
import json
import os
import re
import shlex
import subprocess
import threading

import pytest
import tables
from test_tables import write

from trainers.records import RECORD_NAME
from trainers.results import builders, reading, render

HUGE_INT = "1" + "0" * 5000  # a 5001-digit number: past Python's int-from-text limit


def good_records(root):
    """Two valid base2new records (base and new, seed 1) of CoOp on DTD."""
    write(root, "good/base", "DescribableTextures", "CoOp", 1, 80.0, "base")
    write(root, "good/new", "DescribableTextures", "CoOp", 1, 60.0, "new")


def record_text(field, raw):
    """The text of a base-classes record of CoOp on DTD (seed 2) whose ``field`` is the JSON text ``raw``."""
    record = dict(dataset="DescribableTextures", trainer="CoOp", config="cfg", protocol="base2new", seed=2,
                  subsample="base", shots=16, split="test", accuracy=70.0)
    record[field] = "@@RAW@@"
    return json.dumps(record).replace('"@@RAW@@"', raw)


def put(root, folder, text, name=RECORD_NAME):
    os.makedirs(root / folder, exist_ok=True)
    path = root / folder / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


HOSTILE = [
    ("accuracy", '"75.8"'), ("accuracy", "null"), ("accuracy", "NaN"), ("accuracy", "Infinity"),
    ("accuracy", "-Infinity"), ("accuracy", "1e400"), ("accuracy", "250"), ("accuracy", "-5"), ("accuracy", "true"),
    ("accuracy", "[70]"), ("accuracy", HUGE_INT), ("accuracy", "100.0000001"),
    ("seed", "[2]"), ("seed", HUGE_INT), ("seed", "true"), ("seed", '"2"'), ("seed", "2.0"), ("seed", "null"),
    ("seed", str(2 ** 63)), ("seed", str(-2 ** 63)), ("seed", "1e400"),
    ("shots", '"16"'), ("shots", "16.5"), ("shots", "null"), ("shots", "false"), ("shots", HUGE_INT),
    ("dataset", "5"), ("dataset", "null"), ("dataset", '["DescribableTextures"]'), ("dataset", '""'),
    ("trainer", "{}"), ("trainer", "3"), ("trainer", '""'), ("trainer", '["CoOp"]'),
    ("subsample", "1"), ("subsample", "null"), ("config", '["a"]'), ("config", "{}"), ("protocol", "7"),
    ("protocol", '["base2new"]'),
]


@pytest.mark.parametrize("field,raw", HOSTILE, ids=[f"{f}={r[:12]}" for f, r in HOSTILE])
def test_a_record_with_a_value_it_cannot_hold_is_skipped_with_a_warning(tmp_path, capsys, field, raw):
    good_records(tmp_path)
    bad = put(tmp_path, "bad", record_text(field, raw))
    records, problems = reading.find_records([str(tmp_path)])
    assert len(problems) == 1 and problems[0].startswith(f"{bad}: ") and field in problems[0], problems
    assert len(problems[0]) < len(bad) + 200  # a 5001-digit value is not copied into the warning
    assert sorted(r["accuracy"] for r in records) == [60.0, 80.0]
    built, errors = builders.build_tables(records, ["base2new"], builders.Options(published=False))
    assert errors == [] and len(built) == 1
    # The command line: the table of the good records, and a warning naming the file.
    assert tables.main([str(tmp_path), "--out", str(tmp_path / "out"), "--no-figures", "--no-published"]) == 0
    captured = capsys.readouterr()
    assert f"warning: {bad}: " in captured.err and "Traceback" not in captured.err
    assert f"{2 * 80 * 60 / 140:.2f}" in captured.out  # the HM of the good records only


def test_valid_edge_values_are_kept(tmp_path):
    """What a record may hold: accuracy 0 and 100 (an int too), negative and large seeds, a null config."""
    for i, (seed, accuracy, config) in enumerate(((-3, 0, "cfg"), (2 ** 63 - 1, 100, None), (7, 55.5, "cfg"))):
        write(tmp_path, f"r{i}", "DescribableTextures", "CoOp", seed, accuracy, "base", config=config)
    records, problems = reading.find_records([str(tmp_path)])
    assert problems == [] and sorted(r["seed"] for r in records) == [-3, 7, 2 ** 63 - 1]


NOT_RECORDS = {"list": "[1, 2]", "string": '"results"', "number": "3", "null": "null",
               "not-utf8": b'{"dataset": "\xff\xfe"}', "utf16-garbage": b"\xff\xfe\x00garbage",
               "nested-lists": "[" * 100000, "nested-objects": '{"a": ' * 100000}


@pytest.mark.parametrize("text", NOT_RECORDS.values(), ids=NOT_RECORDS.keys())
def test_a_file_that_is_not_a_record_is_skipped_with_a_warning(tmp_path, text):
    good_records(tmp_path)
    bad = put(tmp_path, "bad", text)
    records, problems = reading.find_records([str(tmp_path)])
    assert len(records) == 2 and len(problems) == 1 and problems[0].startswith(f"{bad}: "), problems


def test_a_huge_file_is_skipped_unread(tmp_path):
    good_records(tmp_path)
    padding = " " * (reading.MAX_RECORD_BYTES + 1)
    bad = put(tmp_path, "bad", record_text("accuracy", "70.0" + padding))
    records, problems = reading.find_records([str(tmp_path)])
    assert len(records) == 2 and len(problems) == 1 and problems[0].startswith(f"{bad}: ")
    assert "larger than" in problems[0]
    # just under the limit is read
    os.remove(bad)
    text = record_text("accuracy", "70.0")
    put(tmp_path, "bad", text + " " * (reading.MAX_RECORD_BYTES - len(text)))
    records, problems = reading.find_records([str(tmp_path)])
    assert len(records) == 3 and problems == []


def find_with_timeout(roots, fifo, seconds=20):
    """find_records in a thread; a reader blocked on the FIFO is released (by opening its other end) and fails."""
    result = {}

    def run():
        try:
            result["value"] = reading.find_records(roots)
        except Exception as err:  # noqa: BLE001 - reported below
            result["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # unblock the reader
        thread.join(seconds)
        pytest.fail(f"find_records hung on the FIFO {fifo}")
    if "error" in result:
        raise result["error"]
    return result["value"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_named_results_json_is_skipped_not_waited_on(tmp_path, capsys):
    good_records(tmp_path)
    os.makedirs(tmp_path / "fifo")
    fifo = str(tmp_path / "fifo" / RECORD_NAME)
    os.mkfifo(fifo)
    records, problems = find_with_timeout([str(tmp_path)], fifo)
    assert len(records) == 2 and len(problems) == 1
    assert problems[0].startswith(f"{fifo}: ") and "not a regular file" in problems[0]
    # given by name on the command line: a warning, not a hang and not "does not exist"
    records, problems = find_with_timeout([fifo, str(tmp_path / "good")], fifo)
    assert len(records) == 2 and problems[0].startswith(f"{fifo}: not a regular file")
    # a link to it, or to a device, is no better
    os.symlink(fifo, tmp_path / "good" / "base" / "link.json")
    records, problems = find_with_timeout([str(tmp_path / "good" / "base" / "link.json")], fifo)
    assert records == [] and "not a regular file" in problems[0]
    if os.path.exists("/dev/zero"):
        os.makedirs(tmp_path / "dev")
        os.symlink("/dev/zero", tmp_path / "dev" / RECORD_NAME)
        records, problems = find_with_timeout([str(tmp_path / "dev")], fifo)
        assert records == [] and "not a regular file" in problems[0]


# ----------------------------------------------------------------------------------------------- escaping
EVIL_TRAINER = "Co|Op<script>alert(1)</script>&amp;\nInjected line`$(touch pwned)`; touch pwned2 \\"
EVIL_DATASET = "Evil|Set<b>bold</b>\r\n| x | y |\\|"


@pytest.fixture
def evil_table(tmp_path):
    """A base2new table whose trainer and dataset names are hostile, with a missing run (seed 2 of New)."""
    for seed in (1, 2):
        write(tmp_path, f"b{seed}", EVIL_DATASET, EVIL_TRAINER, seed, 80.0, "base", config="$(touch cfg)")
    write(tmp_path, "n1", EVIL_DATASET, EVIL_TRAINER, 1, 60.0, "new", config="$(touch cfg)")
    records, problems = reading.find_records([str(tmp_path)])
    assert problems == [] and len(records) == 3
    built, errors = builders.build_tables(records, ["base2new"], builders.Options(published=False),
                                          keys={EVIL_DATASET: "evil key;rm"})
    assert errors == []
    return built[0]


def outside_code_spans(line):
    return re.sub(r"(`+)(?:(?!\1).)*?\1", "", line)


def unescaped_pipes(line):
    return len(re.findall(r"\|", re.sub(r"\\.", "", line)))


def test_markdown_escapes_pipes_html_and_newlines(evil_table):
    markdown = render.to_markdown(evil_table)
    lines = markdown.splitlines()
    rows = [line for line in lines if line.startswith("|")]
    assert len(rows) == 2 + len(evil_table.rows)
    assert all(unescaped_pipes(line) == unescaped_pipes(rows[0]) == 6 for line in rows)
    assert r"Co\|Op&lt;script&gt;alert(1)&lt;/script&gt;&amp;amp; Injected line" in markdown
    assert r"Evil\|Set&lt;b&gt;bold&lt;/b&gt;  \| x \| y \|\\\|" in markdown
    for line in lines:
        text = outside_code_spans(line)
        assert "<" not in text and ">" not in text, line
        assert not line.startswith("Injected") and not line.startswith("| x")
    # the missing run: names escaped, the command in a code span that its backticks cannot close
    missing = [line for line in lines if line.startswith("- Co")]
    assert len(missing) == 1 and "Injected" in missing[0]
    span = re.search(r"\((`+)(.*)\1\)$", missing[0])
    fence, code = span.group(1), span.group(2)
    assert len(fence) == 2 and "``" not in code and code.startswith(" ") and code.endswith(" ")
    assert shlex.split(code)[-2:] == [EVIL_TRAINER.replace("\n", " "), "$(touch cfg)"]


def test_markdown_of_valid_names_is_unchanged():
    assert render.escape_markdown("CoOp (published) [averaged here]") == "CoOp (published) [averaged here]"
    assert render.escape_markdown("81.00 ± 1.00*") == "81.00 ± 1.00*"
    assert render.escape_markdown("a|b<c>&d\ne\\") == "a\\|b&lt;c&gt;&amp;d e\\\\"


def test_latex_escapes_every_special_character():
    assert render.escape_latex("\\&%$#_{}~^\nx\ry") == (
        r"\textbackslash{}\&\%\$\#\_\{\}\textasciitilde{}\textasciicircum{} x y")
    assert render.escape_latex(r"\textbf{x}") == r"\textbackslash{}textbf\{x\}"
    assert render.escape_latex("ImageNet-Sketch (source)") == "ImageNet-Sketch (source)"


def test_latex_output_has_no_live_command_or_broken_comment(evil_table, tmp_path):
    evil_table.header[2] = "Base\\input{/etc/passwd}~^"  # the header is escaped too
    latex = render.to_latex(evil_table)
    for line in latex.splitlines():
        # every line is a comment, a command of the tool's own, or a row
        assert line.startswith(("%", "\\begin", "\\end", "\\toprule", "\\midrule", "\\bottomrule")) or \
            line.endswith("\\\\"), line
    live = latex.replace("\\textbackslash{}", "").replace("\\textasciitilde{}", "").replace(
        "\\textasciicircum{}", "")
    rows = [line for line in live.splitlines() if line.endswith("\\\\")]
    assert len(rows) == 1 + len(evil_table.rows)
    for line in rows:
        assert "~" not in line and "^" not in line.replace("$^*$", "")
        commands = set(re.findall(r"\\[A-Za-z]+", line))
        assert commands <= {"\\pm"}, commands
        assert line.count(" & ") == 4
    assert "\\textbackslash{}input\\{/etc/passwd\\}" in latex


def test_run_hints_are_quoted_shell(evil_table, tmp_path):
    command = evil_table.missing[0].command
    assert shlex.split(command) == ["SEEDS=2", "DATASETS=evil key;rm", "bash", "scripts/base2new.sh", EVIL_TRAINER,
                                    "$(touch cfg)"]
    # Run by a shell (with `bash` a function that prints its arguments): nothing is executed but the hint.
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    shown = subprocess.run(["bash", "-c", 'bash() { printf "<%s>\\n" "$SEEDS" "$DATASETS" "$@"; }\n' + command],
                           cwd=sandbox, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "".join(f"<{a}>\n" for a in ("2", "evil key;rm", "scripts/base2new.sh", EVIL_TRAINER,
                                                         "$(touch cfg)"))
    assert os.listdir(sandbox) == []
    text = render.to_text(evil_table)
    assert f"run: {command}\n" in text


def test_run_hints_of_valid_records_keep_their_form(tmp_path):
    for seed in (1,):
        for dataset in ("ImageNet", "Caltech101"):
            write(tmp_path, f"xd/{dataset}/{seed}", dataset, "CoOp", seed, 70.0, protocol="xd", config="cfg")
    records, _ = reading.find_records([str(tmp_path)])
    built, _ = builders.build_tables(records, ["xd"], builders.Options(seeds=(1, 2, 3), published=False))
    commands = [m.command for m in built[0].missing]
    assert commands == ['SEEDS="2 3" DATASETS=caltech101 bash scripts/xd.sh CoOp cfg',
                        'SEEDS="2 3" DATASETS=caltech101 bash scripts/xd.sh CoOp cfg']


def test_figures_show_dollar_signs_of_names_verbatim(tmp_path):
    """A ``$`` in a name would start matplotlib's mathtext; a malformed formula stopped the whole build."""
    for trainer in ("a$\\frac{$b", "Co$^{x}$"):
        for subsample, accuracy, shots in (("base", 80.0, 1), ("new", 60.0, 2)):
            write(tmp_path, f"b2n/{trainer}/{subsample}", "Evil$\\undefined$", trainer, 1, accuracy, subsample)
            write(tmp_path, f"fs/{trainer}/{shots}", "Evil$\\undefined$", trainer, 1, accuracy, shots=shots,
                  protocol="fewshot")
    records, problems = reading.find_records([str(tmp_path)])
    built, errors = builders.build_tables(records, ["base2new", "fewshot"], builders.Options(published=False))
    assert problems == [] and errors == [] and len(built) == 2
    written = render.write_outputs(built, str(tmp_path / "out"))
    assert sorted(os.path.basename(p) for p in written if p.endswith(".png")) == ["base2new.png", "fewshot.png"]
