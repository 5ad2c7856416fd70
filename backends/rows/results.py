"""An implementation outside Python, as a row: its answers are the results files it wrote for the golden vectors
(contract/vectors.py), checked through the same contract as any other row.

A vector in the manifest without its result file, a result file that cannot be read, results in another dtype than
the vector's, a tensor under a name the format does not document, and a vector whose inputs no longer match the case
the suite runs (its inputs_sha256 differs from today's, or its file was edited) are FAILs, never silent drops; a
case the export did not include (the long ones without --large) is "not supported" and shows as partial coverage.
A malformed manifest, two entries for one case, and anything in results/ that is no vector's result are usage
errors naming the file.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from contract.answers import gradients_from_names
from contract.errors import NotSupported, ResultError
from contract.row import Row
from contract.tensor_files import load_file, load_metadata
from contract.vectors import (
    OUTPUTS,
    GoldenError,
    fingerprint,
    gradient_names,
    read_manifest,
    weight_names,
)
from contract.vocabulary import CONFORMANCE_DTYPES, Device, Dtype, Feature
from spec.cases import CASES_BY_NAME, Case, CaseData, make_case_data
from spec.precision import Policy, check_policy_dtype


@dataclass(eq=False)
class ResultsDirectory(Row):
    """The results written in ``directory`` by an external implementation (see the module docstring)."""

    directory: Path = Path(".")
    manifest: dict = field(default_factory=dict)

    def __post_init__(self):
        self.features = frozenset(Feature)  # which cases it covers is the manifest's business: the others, NotSupported
        self.dtypes = CONFORMANCE_DTYPES
        super().__post_init__()
        self.directory = Path(self.directory)
        self.manifest = read_manifest(self.directory / "manifest.json")
        self.id = self.id or f"results/{self.directory.name}"
        self.description = f"results written by an external implementation in {self.directory}"
        # Vectors by the fingerprint of the inputs the suite runs today: a vector exported from other inputs (an
        # older seed table, an edited manifest) is found under today's fingerprint and fails as stale.
        self._by_fingerprint: dict[str, dict] = {}
        self._today: dict[str, tuple[CaseData, str]] = {}
        for vector in self.manifest["vectors"]:
            data = make_case_data(CASES_BY_NAME[vector["case"]].with_seed(vector.get("seed", CASES_BY_NAME[vector["case"]].seed)),
                                  vector["dtype"])
            today = fingerprint(data)
            self._today[vector["id"]] = (data, today)
            if today in self._by_fingerprint:  # two entries for one case: one would hide the other's results
                raise GoldenError(f"{self.directory / 'manifest.json'}: vectors {self._by_fingerprint[today]['id']!r} and "
                                  f"{vector['id']!r} are the same case and dtype; each vector is listed once")
            self._by_fingerprint[today] = vector
        self._check_results_directory()
        self._policies: dict[Dtype, tuple[Policy, str]] = {}  # half type -> (its declared policy, the file declaring it)

    def _check_results_directory(self) -> None:
        """Everything in results/ must be a vector's result file: a stray file (a result for no vector, a name
        mistyped, a vector dropped from the manifest) is a usage error naming it, never silently ignored."""
        results = self.directory / "results"
        if not results.is_dir():
            return  # every vector then fails as missing its result file
        expected = {f"{vector['id']}.safetensors" for vector in self.manifest["vectors"]}
        stray = sorted(entry.name for entry in results.iterdir() if entry.name not in expected)
        if stray:
            raise GoldenError(f"--results {self.directory}: results/ holds {len(stray)} file(s) that are no vector's result: "
                              f"{', '.join(stray[:5])}{' ...' if len(stray) > 5 else ''} (results/<vector id>.safetensors, "
                              "for the ids in manifest.json; move the others away)")

    def _availability(self, device: str) -> str | None:
        return None if device == Device.CPU else "results files are checked once, under device cpu"

    def _environment(self, device: str) -> dict[str, object]:
        return {"results": str(self.directory), "vectors": len(self.manifest["vectors"])}

    # -- the answers --------------------------------------------------------------------------------------------

    def _result(self, data: CaseData) -> tuple[dict, CaseData, dict[str, np.ndarray]]:
        vector = self._by_fingerprint.get(fingerprint(data))
        if vector is None:
            raise NotSupported("this case is not among the exported vectors (export with the same case set, --large, dtypes)")
        today_data, today = self._today[vector["id"]]
        if today != vector["inputs_sha256"]:
            raise ResultError(f"vector {vector['id']}", "exported from other inputs than the suite runs today",
                              f"inputs_sha256 {today}",
                              f"{vector['inputs_sha256']} in the manifest (export the vectors again and rerun the implementation)")
        self._check_vector_file(vector, today_data)
        path = self.directory / "results" / f"{vector['id']}.safetensors"
        if not path.is_file():
            found = "no such file" if not path.exists() else f"not a regular file ({_file_kind(path)})"
            raise ResultError(str(path), "missing result file", f"results/{vector['id']}.safetensors, written by the implementation", found)
        try:
            result = load_file(str(path))
        except Exception as error:  # a truncated or foreign file: the implementation's fault, named
            raise ResultError(str(path), "unreadable result file", "a safetensors file", f"{type(error).__name__}: {error}") from None
        documented = {*OUTPUTS, *gradient_names(today_data).values()}
        unexpected = sorted(set(result) - documented)
        if unexpected:
            raise ResultError(f"tensor {unexpected[0]!r}", "unexpected in the result file",
                              f"only {list(OUTPUTS)} and {sorted(gradient_names(today_data).values())}", f"tensors {sorted(result)}")
        if Dtype(vector["dtype"]).half:
            self._declared_policy(vector)
        return vector, today_data, result

    def _check_vector_file(self, vector: dict, data: CaseData) -> None:
        """The vector file the implementation read holds the inputs the manifest names (checked once per vector)."""
        if vector.get("_checked"):
            return
        path = self.directory / vector.get("file", f"vectors/{vector['id']}.safetensors")
        try:
            t = load_file(str(path))
            params = data.params.with_tensors({name: t[file_name] for name, file_name in weight_names(data).items()})
            found = fingerprint(replace(data, params=params, x=t["x"], h0=t["h0"], c0=t["c0"],
                                          **{k: t[k] for k in ("lengths", "mask") if k in t}))
        except Exception as error:
            raise ResultError(str(path), "unreadable vector file", "the exported vector", f"{type(error).__name__}: {error}") from None
        if found != vector["inputs_sha256"]:
            raise ResultError(str(path), "vector file changed since the export", f"inputs_sha256 {vector['inputs_sha256']}", found)
        vector["_checked"] = True

    def _data(self, params, x, h0, c0, layer, lengths, mask) -> CaseData:
        """The call's inputs as a case's data: what fingerprint() identifies a vector by."""
        case = Case("", x.shape[0], x.shape[1], params.input_size, params.hidden_size, layer)
        return CaseData(case, params, x, h0, c0, None, None, None, lengths, mask)

    def _policy(self, dtype, device, features=frozenset()):
        return self._policies[dtype][0] if dtype in self._policies else None

    def _declared_policy(self, vector: dict) -> None:
        """A half-type result names the policy it follows in its metadata, the same in every file of that type."""
        path = self.directory / "results" / f"{vector['id']}.safetensors"
        dtype = Dtype(vector["dtype"])
        try:
            named = load_metadata(path).get("policy")
        except (OSError, ValueError) as error:
            raise ResultError(str(path), "unreadable result file", "a safetensors file", f"{type(error).__name__}: {error}") from None
        if named is None:
            raise ResultError(str(path), "no precision policy", "metadata {'policy': ...}, the policy the implementation "
                              f"follows in {dtype}, one of {', '.join(p.value for p in Policy if dtype.value in p.dtypes)}",
                              "no 'policy' in its metadata")
        try:
            policy = check_policy_dtype(named, dtype)
        except ValueError as error:
            raise ResultError(str(path), "metadata 'policy'", "a precision policy of this half type", str(error)) from None
        first = self._policies.setdefault(dtype, (policy, path.name))
        if first[0] is not policy:
            raise ResultError(str(path), "another precision policy than the other results", f"{first[0].value} (as in "
                              f"{first[1]}): one implementation follows one policy in {dtype}", policy.value)

    def _outputs(self, params, x, h0, c0, *, layer, lengths, mask, device):
        _, _, result = self._result(self._data(params, x, h0, c0, layer, lengths, mask))
        missing = [name for name in OUTPUTS if name not in result]
        if missing:
            raise ResultError(missing[0], "missing from the result file", f"tensors {list(OUTPUTS)}", f"tensors {sorted(result)}")
        return tuple(result[name] for name in OUTPUTS)

    def _gradients(self, params, x, h0, c0, cotangents, *, layer, lengths, mask, device):
        vector, data, result = self._result(self._data(params, x, h0, c0, layer, lengths, mask))
        names = gradient_names(data)
        if not any(name in result for name in names.values()):
            raise NotSupported(f"the result file of {vector['id']} has no gradients")
        mixed = self.policy(params.dtype.name, device) is Policy.MIXED  # float32 weights: float32 gradients
        return gradients_from_names({name: result[name] for name in names.values() if name in result}, params, x,
                                    what="gradients", names=names, parameters_dtype=np.float32 if mixed else None)


def _file_kind(path: Path) -> str:
    """What a path that is not a regular file is, for a message."""
    mode = path.stat().st_mode
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


__all__ = ["GoldenError", "ResultsDirectory"]
