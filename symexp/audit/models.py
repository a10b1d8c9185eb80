"""The model `--model` names, built with `--model-kwargs`:

    pkg.module:Factory        a class or function of an importable module
    path/to/file.py:Factory   one of a Python file (its folder joins sys.path, as `python file.py` does)
    hf:<config.json|folder>   transformers' class for a local config (needs transformers); a folder's
                              model.safetensors or pytorch_model.bin are its weights unless a checkpoint is given
    timm:<name>               timm.create_model(name, pretrained=False) (needs timm)

A factory is called with the keyword arguments; hf: sets them on the config; timm: passes them on. Nothing
is downloaded. `parse` checks everything that needs no torch, so a bad argument costs no torch import.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from symexp.audit.errors import AuditError, first_line

FORMS = "pkg.module:Factory, path/to/file.py:Factory, hf:<config.json or folder>, timm:<name>"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # what save_pretrained writes (unsharded)
PACKAGES = {"hf": "transformers", "timm": "timm"}  # the package each optional scheme needs


@dataclass(frozen=True)
class ModelSpec:
    text: str  # as given
    scheme: str  # module | file | hf | timm
    target: str  # module name, file, config, timm name
    attr: str = ""  # the factory (module and file schemes)
    kwargs: dict = field(default_factory=dict)

    def weights(self) -> Path | None:
        """The weights that come with the model: an hf: folder's saved model, if any."""
        folder = Path(self.target)
        if self.scheme == "hf" and folder.is_dir():
            return next((folder / n for n in HF_WEIGHTS if (folder / n).is_file()), None)
        return None

    def build(self):
        """A fresh torch.nn.Module; every failure of the user's code is one AuditError line."""
        from torch import nn

        model = {"module": self._factory, "file": self._factory, "hf": self._hf, "timm": self._timm}[self.scheme]()
        if not isinstance(model, nn.Module):
            raise AuditError(f"--model {self.text!r}: returned {type(model).__name__}, not a torch.nn.Module")
        return model

    def _factory(self):
        factory = getattr(self._module(), self.attr, None)
        if not callable(factory):
            raise AuditError(f"--model {self.text!r}: {self.target} has no class or function {self.attr!r}")
        return self._call(factory, **self.kwargs)

    def _module(self):
        try:
            if self.scheme == "module":
                return importlib.import_module(self.target)
            path = Path(self.target).resolve()
            name = "symexp_audit_model_" + re.sub(r"\W", "_", path.stem)
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # before running it: dataclasses and pickling look themselves up
            sys.path.insert(0, str(path.parent))
            spec.loader.exec_module(module)
            return module
        except Exception as e:  # noqa: BLE001 - anything the user's module raises while importing: one line
            raise AuditError(f"--model {self.text!r}: importing {self.target} failed: {type(e).__name__}: "
                             f"{first_line(e)}") from None

    def _call(self, factory, *args, **kwargs):
        try:
            return factory(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            given = f"with {json.dumps(kwargs)}" if kwargs else "with no arguments"
            raise AuditError(f"--model {self.text!r}: calling it {given} failed "
                             f"({type(e).__name__}: {first_line(e)})") from None

    def _hf(self):
        transformers = _package("transformers", self.text)
        path = Path(self.target)
        config_file = path / "config.json" if path.is_dir() else path
        try:
            config = json.loads(config_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise AuditError(f"--model {self.text!r}: {config_file} is not a readable JSON config "
                             f"({first_line(e)})") from None
        if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
            raise AuditError(f"--model {self.text!r}: {config_file} has no \"model_type\" "
                             "(transformers' save_pretrained writes one)")
        model_type = config.pop("model_type")
        config = self._call(lambda: transformers.AutoConfig.for_model(model_type, **{**config, **self.kwargs}))
        arch = next((a for a in getattr(config, "architectures", None) or [] if hasattr(transformers, a)), None)
        return self._call(getattr(transformers, arch) if arch else transformers.AutoModel.from_config, config)

    def _timm(self):
        timm = _package("timm", self.text)
        if not timm.is_model(self.target):
            near = timm.list_models(f"*{self.target}*")[:5]
            raise AuditError(f"--model {self.text!r}: timm has no model {self.target!r}"
                             f"{'; similar: ' + ', '.join(near) if near else ''}")
        return self._call(timm.create_model, self.target, pretrained=False, **self.kwargs)


def parse(text: str, kwargs_text: str | None = None) -> ModelSpec:
    """Check the form, the file or package it needs and the keyword arguments (no torch import)."""
    kwargs = model_kwargs(kwargs_text)
    scheme, _, rest = text.partition(":")
    if scheme in PACKAGES:
        if importlib.util.find_spec(PACKAGES[scheme]) is None:
            raise AuditError(f"--model {text!r}: needs the {PACKAGES[scheme]} package, "
                             f"which is not installed (pip install {PACKAGES[scheme]})")
        if not rest:
            raise AuditError(f"--model {text!r}: allowed forms: {FORMS}")
        if scheme == "hf" and not (Path(rest).is_file() or (Path(rest) / "config.json").is_file()):
            raise AuditError(f"--model {text!r}: no config.json there; allowed: hf:<config.json or a folder "
                             "holding one> (a local path; nothing is downloaded)")
        return ModelSpec(text, scheme, rest, kwargs=kwargs)
    target, _, attr = text.rpartition(":")
    if not target or not attr.isidentifier():
        raise AuditError(f"--model {text!r}: allowed forms: {FORMS}")
    if target.endswith(".py") or "/" in target:
        if not Path(target).is_file():
            raise AuditError(f"--model {text!r}: {target}: no such file")
        return ModelSpec(text, "file", target, attr, kwargs)
    return ModelSpec(text, "module", target, attr, kwargs)


def model_kwargs(text: str | None) -> dict:
    """`--model-kwargs`: a JSON object, or @file.json / @file.yaml holding one."""
    if text is None:
        return {}
    try:
        if text.startswith("@"):
            path = Path(text[1:])
            if path.suffix not in (".json", ".yaml", ".yml"):
                raise AuditError(f"--model-kwargs {text!r}: allowed: a JSON object or @file.json|.yaml|.yml")
            value = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
        else:
            value = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as e:
        raise AuditError(f"--model-kwargs {text!r}: cannot read it ({type(e).__name__}: {first_line(e)}); allowed: "
                         "a JSON object such as '{\"width\": 64}', or @file.json|.yaml|.yml") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise AuditError(f"--model-kwargs {text!r}: holds a {type(value).__name__}; allowed: a mapping of "
                         "argument names to values")
    return value


def _package(name: str, text: str):
    try:
        return importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - installed but broken (timm without a working torchvision)
        raise AuditError(f"--model {text!r}: {name} is installed but failed to import ({type(e).__name__}: "
                         f"{first_line(e)})") from None
