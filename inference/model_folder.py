"""A model folder on disk: its card verified against the files it names (sha256), found by name or modality,
written atomically. The card itself (typed, read-only) is inference.config."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .atomic import write_json
from .config import CARD_NAME, ModelCard, ModelCardError


def sha256_of(path: Path, chunk_bytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_bytes)
            if not block:
                return h.hexdigest()
            h.update(block)


@dataclass(frozen=True)
class ModelFolder:
    """A verified model: its card and the folder its files live in."""

    path: Path
    card: ModelCard

    def file_for(self, stage: str, backend: str) -> Path:
        files = self.card.stage(stage).files
        if backend not in files:
            raise ModelCardError(
                f"{self.path / CARD_NAME}: stage {stage!r} has no {backend!r} weights "
                f"(available: {sorted(files) or 'none'})"
            )
        return self.path / files[backend]


def load_model_folder(path: Path, verify: bool = True) -> ModelFolder:
    """Read `path/model.json`; with `verify`, check that every file it lists exists and matches its sha256."""
    path = Path(path)
    card_path = path / CARD_NAME
    if not card_path.is_file():
        raise ModelCardError(f"{card_path}: no model card here")
    try:
        raw = json.loads(card_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelCardError(f"{card_path}: cannot read the model card: {exc}") from None
    try:
        card = ModelCard.from_dict(raw)
    except ModelCardError as exc:
        raise ModelCardError(f"{card_path}: {exc}") from None
    if verify:
        for fname, digest in card.sha256.items():
            fpath = path / fname
            if not fpath.is_file():
                raise ModelCardError(f"{fpath}: weight file listed in the model card is missing")
            actual = sha256_of(fpath)
            if actual != digest:
                raise ModelCardError(
                    f"{fpath}: sha256 {actual[:12]}... does not match the model card's {digest[:12]}... "
                    "(file altered or truncated)"
                )
    return ModelFolder(path=path, card=card)


def find_models(weights_dir: Path) -> list[Path]:
    """Model folders (those holding a model card) directly under `weights_dir`, sorted by name."""
    weights_dir = Path(weights_dir)
    if not weights_dir.is_dir():
        return []
    return sorted(p for p in weights_dir.iterdir() if (p / CARD_NAME).is_file())


def select_model(weights_dir: Path, modality: str, name: str | None = None, verify: bool = True) -> ModelFolder:
    """The model to use for `modality`: the one called `name`, else the first (by name) listing the modality."""
    weights_dir = Path(weights_dir)
    if name is not None:
        folder = load_model_folder(weights_dir / name, verify=verify)
        if modality not in folder.card.modalities:
            raise ModelCardError(f"{weights_dir / name}: model does not serve {modality} ({folder.card.modalities})")
        return folder
    candidates = find_models(weights_dir)
    if not candidates:
        raise ModelCardError(f"{weights_dir}: no model folder (a folder with {CARD_NAME}) here")
    for cand in candidates:
        folder = load_model_folder(cand, verify=False)
        if modality in folder.card.modalities:
            return load_model_folder(cand, verify=verify) if verify else folder
    raise ModelCardError(f"{weights_dir}: no model serves {modality}")


def write_card(card: ModelCard, folder: Path) -> Path:
    """Write the card atomically (temporary name, then rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return write_json(folder / CARD_NAME, card.to_dict())
