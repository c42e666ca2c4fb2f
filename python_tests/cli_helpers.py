"""Running `diva` in this process and checking its one-line errors (shared by the CLI tests)."""

from diva_ext import cli

# One epoch of two 8-image batches on a 6-class synthetic set: seconds on a CPU.
DATA_OPTIONS = ["num_classes=6", "images_per_class=5", "image_size=16"]
TINY = ["--epochs", "1", "--batch-size", "8", "--batches-per-epoch", "2", "--queue-batches", "2", "--pretrained", "none",
        "--image-size", "16", "--rho", "10", "--milestones", "1", "--no-progress",
        "--data-option", *DATA_OPTIONS]


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_cli(capsys, *args) -> Result:
    """`diva ARGS` in this process; its exit code and what it printed."""
    capsys.readouterr()
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def error_lines(result: Result):
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_one_line_error(result: Result, *patterns: str) -> str:
    """A non-zero exit and stderr of exactly one line, `diva: error: ...` containing every pattern."""
    assert result.returncode not in (0, None), result.stderr
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("diva: error:"), result.stderr
    for pattern in patterns:
        assert pattern in lines[0], lines[0]
    return lines[0]
