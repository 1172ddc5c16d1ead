"""Running the `chunkstore` command line inside the test process (hundreds of runs per
property would take minutes as subprocesses), through the same entry point as the console
script: chunkstore_cli.main.main turns what ends a command into its exit code and message."""

from __future__ import annotations

import re
from dataclasses import dataclass

from click.testing import CliRunner

from chunkstore_cli.main import main

# What a terminal would act on, on stderr or stdout: C0 controls other than the newline
# that ends each line, DEL, C1 controls, and lone surrogates.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
DOCUMENTED_EXIT_CODES = (0, 1, 2, 3, 4, 5)


@dataclass
class Outcome:
    code: int
    stdout: bytes
    stderr: str


def run_cli(store, *args: str, input: bytes | None = None) -> Outcome:
    """Run chunkstore on store; a foreign exception escapes main() and fails the test with its
    traceback, which is what the user would have seen."""
    with CliRunner().isolation(input=input) as (stdout, stderr, _):
        code = main(["--store", str(store), *args])
    outcome = Outcome(code, stdout.getvalue(), stderr.getvalue().decode("utf-8", "surrogateescape"))
    assert code in DOCUMENTED_EXIT_CODES, outcome
    assert "Traceback" not in outcome.stderr, outcome.stderr
    if code:
        assert_explained(outcome)
    return outcome


def assert_explained(outcome: Outcome) -> None:
    """A failure says why: lines that start with `chunkstore: ` (one per problem; a usage
    error is one such line naming the command's --help); nothing a terminal would act on."""
    lines = outcome.stderr.splitlines()
    assert lines, f"exit {outcome.code} without a message"
    assert all(line.startswith("chunkstore: ") for line in lines), outcome.stderr
    assert not RAW_CONTROL.search(outcome.stderr), outcome.stderr
