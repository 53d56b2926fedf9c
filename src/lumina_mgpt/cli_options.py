"""Command-line options shared by the verbs that load a model (generate, chat, serve)."""

from typing import Annotated

import typer

ModelOption = Annotated[str | None, typer.Option(help="Model folder or hub repo id (default: shipped).")]
TextTokenizerOption = Annotated[str | None, typer.Option(help="Tokenizer file/folder if not in the model.")]
ImageTokenizerOption = Annotated[str | None, typer.Option(help="Image tokenizer if not the model's vq/.")]
DeviceOption = Annotated[str | None, typer.Option(help="torch device, e.g. cuda.")]
TensorParallelOption = Annotated[
    int,
    typer.Option(help="Split the model over N processes: torchrun --nproc-per-node N ... (rank 0 writes)."),
]
