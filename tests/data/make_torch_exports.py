"""Write the tiny torch exports test_pruning.py checks the [CLS] pruning on.

The published ONNX rerankers (Xenova/ms-marco-MiniLM-L-6-v2, the BAAI and jina rerankers) are
Hugging Face sequence classifiers exported by torch.onnx with eager attention. These are the
same architectures at toy size with random weights, exported the same way, so the tests see
the graph patterns of real exports without downloading one. Needs torch and transformers
(`pip install --group bench-torch`); run it again only to change the files:

    python tests/data/make_torch_exports.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

HERE = Path(__file__).parent
# Toy sizes; the graph's structure is what matters. opset 14 as optimum exports these models.
SIZES = {
    "vocab_size": 100,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
    "num_labels": 1,
}
OPSET = 14


def export(model: torch.nn.Module, inputs: list[str], dest: Path) -> None:
    model.eval()
    example = tuple(torch.ones(2, 7, dtype=torch.long) for _ in inputs)
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in inputs}
    torch.onnx.export(
        model,
        example,
        str(dest),
        input_names=inputs,
        output_names=["logits"],
        dynamic_axes={**axes, "logits": {0: "batch_size"}},
        opset_version=OPSET,
        do_constant_folding=True,
        dynamo=False,
    )
    print(f"wrote {dest} ({dest.stat().st_size} bytes)")  # noqa: T201 - a script's report


def main() -> None:
    torch.manual_seed(0)
    bert = BertForSequenceClassification(BertConfig(**SIZES, attn_implementation="eager"))
    export(
        bert,
        ["input_ids", "attention_mask", "token_type_ids"],
        HERE / "tiny-bert-torch-export.onnx",
    )
    roberta = XLMRobertaForSequenceClassification(
        XLMRobertaConfig(**SIZES, pad_token_id=1, attn_implementation="eager")
    )
    export(roberta, ["input_ids", "attention_mask"], HERE / "tiny-xlm-roberta-torch-export.onnx")


if __name__ == "__main__":
    main()
