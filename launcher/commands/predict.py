"""``launcher predict``."""

from __future__ import annotations

from pathlib import Path


def predict(
    source: Path,
    *,
    input: Path | None = None,  # noqa: A002 (the option is --input)
    text: str | None = None,
    output: Path | None = None,
    checkpoint: int | None = None,
    batch_size: int = 16,
    top_k: int = 5,
    max_new_tokens: int = 50,
) -> int:
    """Run a trained model on new text: labels, entities, mask fillers or continuations.

    Args:
        source: run directory (its final model) or model folder (`launcher export` output)
        input: .txt (one text per line), .jsonl or .csv/.tsv file; gold labels in it are scored
        text: one text to predict, instead of --input
        output: JSON-lines file to write (default: stdout)
        checkpoint: predict with this checkpoint of the run instead of its final model
        batch_size: inputs per forward pass
        top_k: MLM: fillers listed per mask token
        max_new_tokens: SFT: tokens generated per prompt
    """
    from launcher.errors import LauncherError

    for name, value in (("batch-size", batch_size), ("top-k", top_k)):
        if value < 1:
            raise LauncherError(f"--{name}: {value}; give a whole number of at least 1")
    if max_new_tokens < 1:
        raise LauncherError(f"--max-new-tokens: {max_new_tokens}; give at least 1")
    from launcher.predict import predict as run_predict
    from launcher.predict.tasks import Settings

    run_predict(
        source,
        input_file=input,
        texts=[text] if text is not None else [],
        output=output,
        checkpoint=checkpoint,
        batch_size=batch_size,
        settings=Settings(max_length=0, top_k=top_k, max_new_tokens=max_new_tokens),
    )
    return 0
