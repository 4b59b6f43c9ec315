"""A small, strict subset of kustomize, enough to render ``k8s/`` in the tests without the
kustomize binary: ``resources`` (files and directories), ``images`` and ``patches`` given as a
file of JSON 6902 operations with a ``target`` (kind and name).

Anything else in a kustomization (a field, an operation, a patch without a target) raises
``Unsupported`` instead of being ignored, so a manifest change that outgrows this subset fails
the tests rather than rendering something ``kubectl kustomize`` would render differently.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

#: The kustomization fields this subset implements.
SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "images", "patches"}
#: Where pod specs sit in the workload kinds k8s/ uses.
_POD_SPEC_PATHS = {"Deployment": ("spec", "template", "spec"), "Job": ("spec", "template", "spec")}


class Unsupported(Exception):
    """The kustomization uses something this subset does not implement."""


def load_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of a file."""
    with path.open() as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def referenced_files(directory: Path) -> set[Path]:
    """The kustomization file of ``directory`` and every file it names, through nested bases."""
    kustomization = directory / "kustomization.yaml"
    spec = load_documents(kustomization)[0]
    files = {kustomization.resolve()}
    for entry in spec.get("resources", []):
        target = (directory / entry).resolve()
        files |= referenced_files(target) if target.is_dir() else {target}
    for patch in spec.get("patches", []):
        files.add((directory / patch["path"]).resolve())
    return files


def build(directory: Path) -> list[dict[str, Any]]:
    """Render the kustomization in ``directory`` like ``kubectl kustomize`` would.

    Raises:
      Unsupported: a field or operation outside the subset.
      FileNotFoundError: a resource or patch file that does not exist.
      ValueError: a patch whose target matches nothing, a path that is not there, a duplicate.
    """
    spec = load_documents(directory / "kustomization.yaml")[0]
    unknown = set(spec) - SUPPORTED_FIELDS
    if unknown:
        raise Unsupported(f"{directory}/kustomization.yaml uses {sorted(unknown)}, outside the test's kustomize subset")
    objects: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        target = directory / entry
        if target.is_dir():
            objects += build(target)
        elif target.is_file():
            objects += load_documents(target)
        else:
            raise FileNotFoundError(f"{directory}/kustomization.yaml names {entry}, which does not exist")
    _check_unique(objects)
    for patch in spec.get("patches", []):
        _apply_patch(directory, patch, objects)
    for image in spec.get("images", []):
        _apply_image(image, objects)
    return objects


def identity(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def _check_unique(objects: list[dict[str, Any]]) -> None:
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        if identity(obj) in seen:
            raise ValueError(f"{identity(obj)} is defined twice")
        seen.add(identity(obj))


def _apply_patch(directory: Path, patch: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    if set(patch) != {"path", "target"} or set(patch["target"]) - {"kind", "name"}:
        raise Unsupported(f"patch {patch}: the subset takes a JSON 6902 file with a kind/name target")
    operations = load_documents(directory / patch["path"])[0]
    if not isinstance(operations, list):
        raise Unsupported(f"{patch['path']} is not a list of JSON 6902 operations")
    wanted = patch["target"]
    targets = [obj for obj in objects
               if obj["kind"] == wanted.get("kind", obj["kind"])
               and obj["metadata"]["name"] == wanted.get("name", obj["metadata"]["name"])]
    if not targets:
        raise ValueError(f"patch {patch['path']}: no resource matches {patch['target']}")
    for obj in targets:
        for operation in operations:
            _apply_operation(obj, operation)


def _apply_operation(obj: dict[str, Any], operation: dict[str, Any]) -> None:
    op, path = operation["op"], operation["path"]
    if op not in {"add", "replace", "remove"}:
        raise Unsupported(f"JSON 6902 operation {op!r} is outside the test's kustomize subset")
    keys = [part.replace("~1", "/").replace("~0", "~") for part in path.lstrip("/").split("/")]
    parent = obj
    for key in keys[:-1]:
        parent = parent[int(key)] if isinstance(parent, list) else parent[key]
    last = keys[-1]
    if isinstance(parent, list):
        if op == "add":
            parent.insert(len(parent) if last == "-" else int(last), copy.deepcopy(operation["value"]))
            return
        index = int(last)
        if not 0 <= index < len(parent):
            raise ValueError(f"{op} {path}: no such element")
        if op == "remove":
            del parent[index]
        else:
            parent[index] = copy.deepcopy(operation["value"])
        return
    if op in {"replace", "remove"} and last not in parent:
        raise ValueError(f"{op} {path}: no such member")
    if op == "remove":
        del parent[last]
    else:
        parent[last] = copy.deepcopy(operation["value"])


def _apply_image(image: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    if set(image) - {"name", "newName", "newTag", "digest"}:
        raise Unsupported(f"image override {image} is outside the test's kustomize subset")
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            name, _, _ = split_image(container["image"])
            if name != image["name"]:
                continue
            reference = image.get("newName", name)
            if "digest" in image:
                reference += "@" + image["digest"]
            elif "newTag" in image:
                reference += ":" + image["newTag"]
            container["image"] = reference


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec of a workload, or None for other kinds."""
    path = _POD_SPEC_PATHS.get(obj["kind"])
    if path is None:
        return None
    spec = obj
    for key in path:
        spec = spec[key]
    return spec


def split_image(reference: str) -> tuple[str, str | None, str | None]:
    """(name, tag, digest) of an image reference; a registry's port is not a tag."""
    name, _, digest = reference.partition("@")
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > last_slash:
        name, tag = name[:colon], name[colon + 1:]
    return name, tag, digest or None
