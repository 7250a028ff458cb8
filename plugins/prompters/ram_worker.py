"""RAM + DAPE tagging in a worker process: dp2o runs this file with another Python interpreter.

The DP²O-SR models were trained and are run with tag prompts written by RAM (Swin-L) with the
DAPE weights, from the LR image. That code (the ``ram`` package the DP²O-SR and SeeSR
repositories ship, not on the package index) needs older packages than dp2o's (transformers
4.x, timm, loralib, fairscale), so it runs in its own environment; this file imports only the
standard library, numpy, torch, torchvision, that ``ram`` package (from the folder dp2o names)
and ``worker_protocol.py`` from its parent folder — never dp2o.

What it does per image, as the authors' ``get_validation_prompt``: the 8-bit RGB image as a
tensor in [0, 1] (``ToTensor``), resized to 384 × 384 (torchvision's ``Resize`` on the tensor)
and normalised with ImageNet's mean and std; ``inference_ram`` gives the tags, joined by the
model with ", "; that text is the prompt. The model is built as their script builds it:
``ram(pretrained=RAM, pretrained_condition=DAPE, image_size=384, vit='swin_l')``, in float32.
Their ``init_tokenizer`` loads BERT's tokenizer from a folder on their own machine; here it is
loaded from the ``tokenizer`` dp2o passes (``bert-base-uncased`` or a local copy), with the
same two special tokens.

Protocol (see :mod:`dp2o_plugins.worker_protocol` for the framing):

* ``{"op": "create", "code", "ram", "dape", "tokenizer", "device"}`` → ``{"ok": true}``
* ``{"op": "tag", "count": n}`` + n images (H×W×3 uint8) → ``{"ok": true, "tags": [n texts]}``
* any failure → ``{"ok": false, "error": "Type: message"}``; end of stdin ends the worker.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if __package__:  # imported by dp2o (tests, the docs)
    from dp2o_plugins.worker_protocol import serve
else:  # run as a script by another interpreter, without dp2o: the protocol module beside its folder
    sys.path.append(str(Path(__file__).resolve().parents[1]))
    from worker_protocol import serve  # type: ignore[no-redef]

#: The side RAM Swin-L sees (their ``image_size=384``) and ImageNet's normalisation.
IMAGE_SIZE = 384
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def create(request: dict):
    """The RAM + DAPE model, built as the authors' script builds it."""
    import torch

    sys.path.insert(0, str(request["code"]))
    import ram.models.ram_lora as ram_lora

    tokenizer = request.get("tokenizer") or "bert-base-uncased"
    ram_lora.init_tokenizer = lambda: _bert_tokenizer(tokenizer)
    model = ram_lora.ram(
        pretrained=str(request["ram"]), pretrained_condition=str(request["dape"]), image_size=IMAGE_SIZE,
        vit="swin_l",
    )  # fmt: skip
    return model.eval().to(torch.device(request.get("device") or "cpu"))


def _bert_tokenizer(source: str):
    """BERT's tokenizer with the two tokens RAM's ``init_tokenizer`` adds ([DEC], [ENC])."""
    from transformers import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(source)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    tokenizer.enc_token_id = tokenizer.convert_tokens_to_ids("[ENC]")
    return tokenizer


def tag(model, images) -> list[str]:
    """The tags of each image (one at a time, as the authors' script runs them)."""
    import torch
    from ram import inference_ram
    from torchvision import transforms

    prepare = transforms.Compose(
        [transforms.Resize((IMAGE_SIZE, IMAGE_SIZE)), transforms.Normalize(MEAN, STD)]
    )
    device = next(model.parameters()).device
    texts = []
    for image in images:
        tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255).unsqueeze(0).to(device)
        with torch.no_grad():
            texts.append(str(inference_ram(prepare(tensor), model)[0]))
    return texts


class TaggerServer:
    """The requests of one tagger worker: ``create`` the model, then ``tag`` batches."""

    def __init__(self) -> None:
        self.model: Any = None

    @staticmethod
    def arrays_in(request: dict) -> int:
        """The images of a ``tag`` request."""
        return int(request.get("count", 0)) if request.get("op") == "tag" else 0

    def handle(self, request: dict, images: list) -> tuple[dict, list]:
        if request.get("op") == "create":
            self.model = create(request)
            return {"ok": True}, []
        if request.get("op") == "tag" and self.model is not None:
            return {"ok": True, "tags": tag(self.model, images)}, []
        return {"ok": False, "error": f"unexpected request {request.get('op')!r}"}, []


def main() -> None:
    """Serve requests until stdin ends."""
    server = TaggerServer()
    serve(server.handle, server.arrays_in)


if __name__ == "__main__":
    main()
