"""Study specs (``studies/*.yaml``): loading and validation with errors that name the field."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sweep.compress.activations import FORMATS_WITH_ACTIVATIONS, activations_of
from sweep.compress.formats import FORMATS
from sweep.compress.registry import JOINT_PRUNERS, unknown_name_message
from sweep.compress.variables import (
    OWL_LAMBDA,
    OWL_M,
    SUPPORTED_BITS,
    UNSTRUCTURED,
    VARIABLES,
    allocation_acts,
)
from sweep.errors import UserError
from sweep.metrics import BOUNDED, OBJECTIVES
from sweep.runtimes import CAPABILITIES, NONE, RUNTIME_NAMES, RUNTIMES, capability_value
from sweep.storage import display

SAMPLERS = ("tpe", "nsga2", "gp", "random", "grid")  # each a search plan (sweep.plan)
# Where a run writes what the spec does not place: the study database, plots, reports,
# exports and the calibration cache go under runs/ in the working directory.
RUNS = Path("runs")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
# A spec is a few kilobytes of YAML; past these, a file is refused before it is parsed, and a
# document whose aliases (``*name``) would repeat more nodes than ALIAS_BUDGET before it is built.
SPEC_MAX_BYTES = 1 << 20
ALIAS_BUDGET = 10_000
MAX_CONFIGURATIONS = 100_000  # the default of search.max_configurations
SPARSITY_DECIMALS = 6  # sparsities are kept to this many decimals (CompressionConfig.canonical)


class SpecError(UserError, ValueError):
    """A study spec that cannot be used; the message names the field and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SparsityRange(_Strict):
    """Sparsity values to search: ``low`` to ``high`` by ``step``, or a ``values`` list; each
    kept to ``SPARSITY_DECIMALS`` decimals."""

    low: float = Field(0.0, ge=0.0, lt=1.0)
    high: float = Field(0.5, ge=0.0, lt=1.0)
    step: float = Field(0.1, gt=0.0, lt=1.0)
    values: list[Annotated[float, Field(ge=0.0, lt=1.0)]] | None = None

    @field_validator("step")
    @classmethod
    def _resolution(cls, v: float) -> float:
        if v < 10**-SPARSITY_DECIMALS:
            raise ValueError(
                f"step {v:g} is finer than sparsities are kept ({SPARSITY_DECIMALS} decimals): "
                f"at least {10**-SPARSITY_DECIMALS:g}"
            )
        return v

    @model_validator(mode="after")
    def _ordered(self) -> SparsityRange:
        if self.values is None and self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        if self.values is not None and not self.values:
            raise ValueError("values must not be empty")
        top = max(self.grid()) if self.values is not None else self._value(self._steps())
        if top >= 1.0:
            raise ValueError(
                f"the largest sparsity, {top:g} at {SPARSITY_DECIMALS} decimals, must be below 1"
            )
        return self

    def _steps(self) -> int:
        return int(round((self.high - self.low) / self.step))

    def _value(self, i: int) -> float:
        return round(self.low + i * self.step, SPARSITY_DECIMALS)

    def grid(self) -> list[float]:
        if self.values is not None:
            return sorted({round(v, SPARSITY_DECIMALS) for v in self.values})
        return [self._value(i) for i in range(self._steps() + 1)]

    def size(self) -> int:
        """``len(self.grid())``, without building a range's grid."""
        return len(self.grid()) if self.values is not None else self._steps() + 1

    def lowest(self) -> float:
        return min(self.grid()) if self.values is not None else self._value(0)


VARIABLE_OF_LIST = {v.spec_list: v for v in VARIABLES if v.spec_list != "sparsity"}
SPEC_LISTS = tuple(VARIABLE_OF_LIST)  # every search list but sparsity (a range, checked itself)


class SearchSpace(_Strict):
    """The variables of the search. Each list is the set of choices offered to the sampler;
    what each variable means, when a configuration asks it and which values are allowed is its
    entry in ``sweep.compress.variables``."""

    sparsity: SparsityRange = SparsityRange()
    patterns: list[str] = ["unstructured"]
    prune_methods: list[str] = ["magnitude"]
    # int (integer weights of ``bits``), or a float format: fp8, nvfp4, mxfp4
    # (sweep.compress.formats), which fixes its own bits, groups and symmetry
    formats: list[str] = ["int"]
    # activations quantized at run time, asked of a format that has them: none, fp8_dynamic
    # (fp8 weights and activations, FP8 W8A8), nvfp4 (nvfp4 weights and activations, W4A4)
    activations: list[str] = ["none"]
    bits: list[int] = [4, 16]
    group_sizes: list[int | None] = [128]
    symmetric: list[bool] = [False]
    quant_methods: list[str] = ["rtn"]
    orders: list[str] = ["prune_first"]
    cases: list[Literal["A", "B"]] = ["B"]
    # non-uniform compression (sweep.compress.profile): how unstructured sparsity spreads over
    # the blocks (uniform, owl) and OWL's parameters; how bit-widths spread over the layers
    # (uniform, mixed: ``bits`` is then the average)
    profiles: list[str] = ["uniform"]
    owl_lambdas: list[float] = [OWL_LAMBDA]
    owl_ms: list[float] = [OWL_M]
    allocations: list[str] = ["uniform"]
    # GPTQ's activation order (true: columns by decreasing Hessian diagonal); vLLM refuses it
    act_orders: list[bool] = [False]
    # configurations to run before any other, as trial parameters (sparsity, pattern, format, bits,
    # prune_method, quant_method, group_size, symmetric, order, case, profile, owl_lambda,
    # owl_m, allocation, act_order); those with one choice in the space may be left out.
    # Checked against the space by ``space.first_configs``.
    first: list[dict[str, float | int | str | bool | None]] = []
    # a larger space is refused: its size says a step or a list is not what was meant
    max_configurations: int = Field(MAX_CONFIGURATIONS, gt=0)

    @field_validator(*SPEC_LISTS)
    @classmethod
    def _choices(cls, v: list, info: ValidationInfo) -> list:
        """Each choice as the variable's table entry checks it (``sweep.compress.variables``)."""
        variable = VARIABLE_OF_LIST[info.field_name]
        for value in v:
            refusal = variable.check(value)
            if refusal is not None:
                raise ValueError(refusal)
        return _non_empty(v)

    @model_validator(mode="after")
    def _sized(self) -> SearchSpace:
        if "uniform" not in self.allocations and (
            "int" not in self.formats or not any(map(allocation_acts, self.bits))
        ):
            acting = [b for b in SUPPORTED_BITS if allocation_acts(b)]
            raise ValueError(
                f"allocations {self.allocations} with bits {self.bits} give no configuration "
                "with a mixed allocation: "
                f"a mixed allocation spreads an average of bits {acting} over the layers; add "
                f"one of {acting} to bits, or uniform to allocations"
            )
        for fmt in self.formats:
            if not self.activation_choices(fmt):
                raise ValueError(
                    f"activations {self.activations} give {fmt} weights no choice: {fmt} takes "
                    f"{list(activations_of(fmt))}; add one of them to activations"
                )
        size = self.size()
        if size > self.max_configurations:
            raise ValueError(
                f"the space holds {size:,} configurations, more than max_configurations "
                f"({self.max_configurations:,}): narrow it (a coarser sparsity step, shorter "
                "lists), or raise max_configurations"
            )
        return self

    def activation_choices(self, fmt: str) -> list[str]:
        """The activations asked of ``fmt`` weights: the listed ones that format takes (``none``
        alone, not asked, for a format without activations)."""
        if fmt not in FORMATS_WITH_ACTIVATIONS:
            return ["none"]
        return [a for a in dict.fromkeys(self.activations) if a in activations_of(fmt)]

    def size(self) -> int:
        """How many distinct configurations the space holds (``sweep.space.all_configs``),
        counted without listing them: a configuration that does not prune ignores the pruning
        choices, one that does not quantize the quantization choices, and so on."""
        allocations = set(self.allocations)
        grids = len(set(self.group_sizes)) * len(set(self.symmetric))
        # quantized forms per quantization method (each float format is one); unquantized:
        # whether integer bits 16 is offered
        integer = "int" in self.formats
        widths = set(self.bits) if integer else set()
        quantized = sum(grids * _allocations_at(b, allocations) for b in widths if b < 16)
        for fmt in set(self.formats) - {"int"}:  # a float format: once per activation choice
            quantized += len(self.activation_choices(fmt))
        unquantized = int(16 in widths)
        # quantization methods, GPTQ once per activation order
        orders_of = {"gptq": len(set(self.act_orders))}
        methods = sum(orders_of.get(m, 1) for m in set(self.quant_methods))

        patterns = set(self.patterns)
        unstructured = UNSTRUCTURED in patterns
        profiles = set(self.profiles)
        spreads = int("uniform" in profiles)
        spreads += int("owl" in profiles) * len(set(self.owl_lambdas)) * len(set(self.owl_ms))
        sparsities = self.sparsity.size()
        unpruned = int(unstructured and self.sparsity.lowest() == 0.0)
        # pruned forms per pruning method
        pruned = (sparsities - unpruned) * spreads * unstructured + len(patterns - {UNSTRUCTURED})

        orders, cases = set(self.orders), set(self.cases)
        sequential = len(cases) * ("prune_first" in orders) + ("quant_first" in orders)
        joint = "joint" in orders
        # a joint pass quantizes GPTQ-style whatever the method; a pruner without one runs
        # prune-then-quantize Case B instead, which may already be in the space
        joint_one_pass = quantized if joint else 0
        joint_fallback = joint and not ("prune_first" in orders and "B" in cases)
        both_one_pass = quantized * methods * sequential + joint_one_pass
        both_fallback = quantized * methods * (sequential + joint_fallback)
        pruners = set(self.prune_methods)
        one_pass = sum(m in JOINT_PRUNERS for m in pruners)
        both = pruned * (one_pass * both_one_pass + (len(pruners) - one_pass) * both_fallback)
        return (
            unpruned * (unquantized + quantized * methods)
            + pruned * len(pruners) * unquantized
            + both
        )


def _allocations_at(bits: int, allocations: set[str]) -> int:
    """How many allocations a configuration at ``bits`` can have: each of ``allocations``
    where a mixed allocation acts; elsewhere one (uniform: the allocation is not asked)."""
    return len(allocations) if allocation_acts(bits) else 1


def _non_empty(v: list) -> list:
    if not v:
        raise ValueError("must list at least one choice")
    return v


class TaskSpec(_Strict):
    """An lm-eval task: its name, the metric to read, and optionally its random-guess score."""

    name: str
    metric: str | None = None  # default: acc, then acc_norm, then exact_match
    random_score: float | None = Field(None, ge=0.0, lt=1.0)


class CalibrationSpec(_Strict):
    """Calibration text for methods that need activations.

    ``source``: ``file`` (a local text file, one sample a line or paragraph; a relative ``path``
    is taken from the spec's folder), ``dataset`` (a Hugging Face dataset, for machines with
    network access) or ``function`` (``module:callable``, a Python function that returns a list
    of texts, e.g. ``sweep.realtext:calibration_texts``).
    """

    source: Literal["file", "dataset", "function"] = "file"
    function: str | None = None
    path: Path | None = None
    dataset: str | None = None
    dataset_config: str | None = None
    split: str = "train"
    text_field: str = "text"
    samples: int = Field(64, gt=0)
    seq_len: int = Field(128, gt=0)
    # cached: per-layer statistics of the base model computed once and reused by every trial;
    # sequential: each block calibrated on the already-compressed blocks before it (slower).
    mode: Literal["cached", "sequential"] = "cached"
    cache_dir: Path | None = None  # default: RUNS / "calibration-cache"
    batch_size: int = Field(8, gt=0)

    @model_validator(mode="after")
    def _source_fields(self) -> CalibrationSpec:
        if self.source == "file" and self.path is None:
            raise ValueError("source 'file' needs a path")
        if self.source == "dataset" and not self.dataset:
            raise ValueError("source 'dataset' needs a dataset name")
        if self.source == "function" and not re.fullmatch(r"[\w.]+:\w+", self.function or ""):
            raise ValueError("source 'function' needs a function as module:callable")
        return self


def calibration_source(cal: CalibrationSpec | None) -> str:
    """Where a calibration set comes from, in words: "file /x/cal.txt", "dataset wikitext"..."""
    if cal is None:
        return "source"
    where = {"file": cal.path, "dataset": cal.dataset, "function": cal.function}[cal.source]
    return f"{cal.source} {where}"


class StagesSpec(_Strict):
    """Staged evaluation (``sweep.evaluation.stages``): a KL proxy, then each task on a seeded
    sample of its documents; a trial whose best case is dominated by the study's front stops there.

    ``mode``: ``auto`` turns it on when every task has at least ``AUTO_MIN_DOCS`` documents to
    evaluate (a sample of fewer saves little), ``on`` always, ``off`` never (every trial gets
    the full evaluation, as a paper table needs).
    """

    mode: Literal["auto", "on", "off"] = "auto"
    # each task's sample in stage 1: a fraction of its documents (0.2), or a number of them
    # (200); a list of increasing sizes races ([100, 200, 400]): the sample grows step by step,
    # and a trial stops at the first step where its best case is dominated
    # measured: make bench-fidelity; steps at or past a task's size are dropped
    sample: int | float | list[int | float] = [50, 100, 200, 400, 800, 1600]
    min_docs: int = Field(50, gt=0)  # at least this many documents of each task in stage 1
    z: float = Field(2.5, gt=0.0)  # stage 1's interval: estimate +/- z standard errors
    seed: int = 0  # draws the sample; the same sample for every trial of a study
    # the KL proxy's held-out tokens, cut into sequences of kl_seq_len (or the model's longest
    # input, if shorter): at least one sequence (sweep.evaluation.proxy.held_out_tokens)
    kl_tokens: int = Field(1024, gt=0)
    kl_seq_len: int = Field(256, gt=1)

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_booleans(cls, v: object) -> object:
        # YAML 1.1 reads an unquoted on/off as a boolean
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("sample", mode="before")
    @classmethod
    def _sample(cls, v: object) -> object:
        sizes = v if isinstance(v, list) else [v]
        allowed = (
            "sample must be a fraction of each task's documents, above 0 and below 1 (0.2), a "
            "whole number of them (200), or a list of increasing sizes of one kind, the steps "
            "of a sample that grows ([100, 200, 400])"
        )
        for size in sizes:
            number = isinstance(size, int | float) and not isinstance(size, bool)
            if not number or size <= 0 or (isinstance(size, float) and size >= 1):
                raise ValueError(allowed)
        kinds = {type(size) for size in sizes}
        increasing = all(a < b for a, b in itertools.pairwise(sizes))
        if not sizes or len(kinds) > 1 or not increasing:
            raise ValueError(allowed)
        return sizes[0] if len(sizes) == 1 else sizes

    @model_validator(mode="after")
    def _one_sequence(self) -> StagesSpec:
        if self.kl_tokens < self.kl_seq_len:
            raise ValueError(
                f"kl_tokens ({self.kl_tokens}) must be at least kl_seq_len ({self.kl_seq_len}): "
                "the KL proxy measures whole sequences of kl_seq_len tokens"
            )
        return self


AUTO_MIN_DOCS = 200


class EvaluationSpec(_Strict):
    """What to measure: lm-eval tasks for Sr, and an optional perplexity task."""

    tasks: list[TaskSpec]
    include_path: Path | None = None  # a folder of local lm-eval task YAMLs
    perplexity_task: str | None = None
    batch_size: int = Field(32, gt=0)
    limit: int | None = Field(None, gt=0)  # questions per task, for quick looks
    max_length: int | None = Field(None, gt=0)
    stages: StagesSpec = StagesSpec()

    @field_validator("tasks", mode="before")
    @classmethod
    def _names(cls, v: object) -> object:
        if isinstance(v, list):
            return [{"name": t} if isinstance(t, str) else t for t in v]
        return v

    @field_validator("tasks")
    @classmethod
    def _some(cls, v: list[TaskSpec]) -> list[TaskSpec]:
        return _non_empty(v)


class SamplerSpec(_Strict):
    name: str = "tpe"
    seed: int | None = 0

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in SAMPLERS:
            raise ValueError(unknown_name_message("sampler", v, list(SAMPLERS)))
        return v


class Band(_Strict):
    """An inclusive range; either end may be left open."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Band:
        if self.min is not None and self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        return self


class Constraints(_Strict):
    """Feasibility of a trial's result; infeasible trials are stored as such and steer the
    sampler (TPE, NSGA-II and GP read them; random and grid ignore them)."""

    tcr: Band | None = None
    real_ratio: Band | None = None
    deploy_ratio: Band | None = None  # needs a deploy runtime
    sr: Band | None = None

    def violations(self, metrics: dict[str, float]) -> dict[str, float]:
        """One value per bound, named like ``sr.min``; Optuna's convention: the bound is met
        when its value is <= 0, and the value says by how much it is missed."""
        out = {}
        for name in BOUNDED:
            band = getattr(self, name)
            if band is None:
                continue
            if band.min is not None:
                out[f"{name}.min"] = band.min - metrics[name]
            if band.max is not None:
                out[f"{name}.max"] = metrics[name] - band.max
        return out


class DeploySpec(_Strict):
    """Where the study's winners will run (``sweep.runtimes``): ``runtime`` vllm, transformers
    or none (the paper's theory alone: no verdict, no constraint), and ``gpu``, the target GPU's
    compute capability ("8.0": A100, "8.9": L40S, "9.0": H100), which vLLM's rules need and
    transformers' ignore. With a runtime, a trial it would refuse is infeasible."""

    runtime: str = NONE
    gpu: str | None = None

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, v: str) -> str:
        if v not in RUNTIME_NAMES:
            raise ValueError(unknown_name_message("runtime", v, list(RUNTIME_NAMES)))
        return v

    @field_validator("gpu", mode="before")
    @classmethod
    def _capability(cls, v: object) -> object:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = f"{float(v):.1f}"  # YAML reads an unquoted 9.0 as a number
        if v is not None and v not in CAPABILITIES:
            raise ValueError(
                f"{v!r} is not a compute capability; allowed: {', '.join(CAPABILITIES)} "
                '(quote it: gpu: "8.0")'
            )
        return v

    @model_validator(mode="after")
    def _gpu_when_needed(self) -> DeploySpec:
        if self.runtime in RUNTIMES and RUNTIMES[self.runtime].needs_gpu and self.gpu is None:
            raise ValueError(
                f"runtime {self.runtime} serves what the GPU runs: give the target GPU's compute "
                'capability, e.g. gpu: "8.0" (A100), "8.9" (L40S), "9.0" (H100)'
            )
        return self

    @property
    def active(self) -> bool:
        return self.runtime != NONE


def _check_deploy(spec: StudySpec) -> None:
    """A runtime that serves nothing the search space holds, and deploy_ratio asked of no
    runtime, are refused before any trial."""
    deploy, search = spec.deploy, spec.search
    named = "deploy_ratio" in spec.objectives or spec.constraints.deploy_ratio is not None
    if named and not deploy.active:
        raise ValueError(
            "deploy_ratio (an objective or a constraint) is what a runtime holds: set deploy: "
            "{runtime: vllm, gpu: ...} or {runtime: transformers}"
        )
    integer = "int" in search.formats
    if not deploy.active or (integer and 16 in search.bits):
        return
    runtime = RUNTIMES[deploy.runtime]
    shapes = [
        (b, g, s, "int", "none")
        for b in (search.bits if integer else [])
        for g in search.group_sizes
        for s in search.symmetric
    ]
    shapes += [
        (f.nominal_bits, f.group_size, True, f.name, a)
        for f in (FORMATS[name] for name in search.formats if name != "int")
        for a in search.activation_choices(f.name)
    ]
    served = [
        shape for shape in shapes
        if (rule := runtime.rule(*shape)) is not None and rule.runs_on(deploy.gpu)
    ]  # fmt: skip
    if not served:
        gpu = f" on a GPU of compute capability {deploy.gpu}" if deploy.gpu else ""
        least = min(
            (
                r.min_capability
                for shape in shapes
                if (r := runtime.rule(*shape)) is not None and r.min_capability
            ),
            key=capability_value,
            default=None,
        )
        hint = f" (these forms need {least} or above)" if least and deploy.gpu else ""
        formats = "" if search.formats == ["int"] else f"formats {search.formats}, "
        acts = "" if search.activations == ["none"] else f"activations {search.activations}, "
        raise ValueError(
            f"{runtime.title} serves none of the search space's quantized forms ({formats}"
            f"{acts}bits {search.bits}, group sizes {search.group_sizes}){gpu}{hint}; widen the "
            "space (bits 16 is always served), or change deploy"
        )


def meets_constraints(values: dict[str, float]) -> bool:
    """Whether a trial with these constraint values (``Trial.constraints``) is feasible: every
    bound met, i.e. every value <= 0 (none means no constraint)."""
    return all(v <= 0 for v in values.values())


class Fingerprints(_Strict):
    """What a study's trials were measured on besides its spec's fields, each as a sha256 of
    its content: the model's weights (and config), its tokenizer, the calibration token ids,
    the tasks' documents and their lm-eval configuration (prompts, metrics). None: not known,
    or not read (a configuration that needs no calibration)."""

    weights: str | None = None
    tokenizer: str | None = None
    calibration: str | None = None
    documents: str | None = None
    prompts: str | None = None

    def changed(self, now: Fingerprints) -> list[str]:
        """The fields known on both sides whose fingerprints differ."""
        return [
            name
            for name in FINGERPRINTED
            if getattr(self, name) is not None
            and getattr(now, name) is not None
            and getattr(self, name) != getattr(now, name)
        ]

    def known(self, now: Fingerprints) -> Fingerprints:
        """These fingerprints, completed by those of ``now`` that these do not know."""
        return self.model_copy(
            update={n: getattr(now, n) for n in FINGERPRINTED if getattr(self, n) is None}
        )


FINGERPRINTED = tuple(Fingerprints.model_fields)


class StudySpec(_Strict):
    """A whole study: model, data, tasks, search space, objectives, sampler, budget, storage."""

    name: str
    model: str  # a Hugging Face id, or a local folder (relative: from the spec's folder)
    # what the spec's configuration was measured on (sweep export writes them into
    # sweep-trial.yaml); a model, tokenizer, calibration set or task that differs is refused
    fingerprints: Fingerprints = Fingerprints()
    trust_remote_code: bool = False  # run code that ships with the model (transformers' flag)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    calibration: CalibrationSpec | None = None  # needed when a method of the space needs data
    evaluation: EvaluationSpec
    search: SearchSpace = SearchSpace()
    objectives: list[str] = ["srcr", "tcr"]
    constraints: Constraints = Constraints()
    deploy: DeploySpec = DeploySpec()
    sampler: SamplerSpec = SamplerSpec()
    trials: int = Field(12, gt=0)
    storage: str | None = None  # default: sqlite:///runs/<name>.db

    @model_validator(mode="before")
    @classmethod
    def _legacy_fingerprint(cls, data: object) -> object:
        # sweep-trial.yaml files and stored specs from before `fingerprints` said
        # `model_fingerprint: <weights>`
        if isinstance(data, dict) and "model_fingerprint" in data:
            data = dict(data)
            weights = data.pop("model_fingerprint")
            if weights is not None:
                pins = dict(data.get("fingerprints") or {})
                pins.setdefault("weights", weights)
                data["fingerprints"] = pins
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        check_study_name(v)
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        check_device_name(v)
        return v

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[str]) -> list[str]:
        for o in v:
            if o not in OBJECTIVES:
                raise ValueError(unknown_name_message("objective", o, list(OBJECTIVES)))
        if len(set(v)) != len(v):
            raise ValueError("objectives must not repeat")
        return _non_empty(v)

    @model_validator(mode="after")
    def _deployable(self) -> StudySpec:
        _check_deploy(self)
        return self

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{RUNS / self.name}.db"


def check_device_name(device: str) -> None:
    """Devices sweep can run on: ``auto`` (a GPU when there is one), ``cpu``, ``cuda``,
    ``cuda:N`` or ``mps``."""
    if not _DEVICE.fullmatch(device):
        raise ValueError(
            f"unknown device {device!r}; allowed: auto, cpu, cuda, cuda:N (a GPU's index), mps"
        )


def check_study_name(name: str) -> None:
    """A study's name also names its files under ``RUNS``: no path separators, no dot first."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"study name {name!r} must be letters, digits, '_', '.' or '-', starting with a "
            "letter or digit"
        )


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid study spec {source}:"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        given = e.get("input")
        shown = "" if isinstance(given, dict) else f" (got {_quoted(given)})"
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"  {field}: {msg}{shown}")
    return "\n".join(lines)


def _quoted(value: object, limit: int = 200) -> str:
    """``repr(value)`` with the secrets of any URL in it masked (before it is cut, so that no
    part of one is left), cut to ``limit`` characters."""
    text = display(repr(value))
    return text if len(text) <= limit else text[:limit] + "..."


def parse_spec(data: object, source: str = "<spec>") -> StudySpec:
    if not isinstance(data, dict):
        raise SpecError(f"invalid study spec {source}: expected a mapping of fields at the top")
    try:
        return StudySpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_errors(err, source)) from None


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study spec; relative paths inside it are taken from the spec's folder."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"study spec {path} does not exist")
    spec = parse_spec(read_yaml(path), str(path))
    return _resolve_paths(spec, path.parent)


def read_yaml(path: Path, what: str = "study spec") -> object:
    """The YAML document in ``path``, read safely from a hostile author: a file over
    ``SPEC_MAX_BYTES``, aliases that would repeat more than ``ALIAS_BUDGET`` nodes (a "billion
    laughs") and nesting deeper than Python's stack are refused before the document is built."""
    with path.open("rb") as f:
        raw = f.read(SPEC_MAX_BYTES + 1)
    if len(raw) > SPEC_MAX_BYTES:
        raise SpecError(f"{what} {path} is over {SPEC_MAX_BYTES >> 20} MiB, the most it may be")
    loader = yaml.SafeLoader(raw)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        sizes: dict[int, int] = {}
        repeated = _expanded_size(node, sizes, set()) - len(sizes)
        if repeated > ALIAS_BUDGET:
            raise SpecError(
                f"{what} {path}: its YAML aliases (*name) repeat {repeated:,} nodes, more than "
                f"the {ALIAS_BUDGET:,} allowed; write the values out"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise SpecError(f"{what} {path} is not valid YAML: {_yaml_problem(err)}") from None
    except RecursionError:
        raise SpecError(f"{what} {path} nests its YAML too deeply to be read") from None
    finally:
        loader.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _expanded_size(node: yaml.Node, sizes: dict[int, int], counting: set[int]) -> int:
    """How many nodes ``node`` stands for once every alias in it is expanded; ``sizes`` keeps
    those of the distinct nodes counted, ``counting`` those under way (an alias to one of them
    is a loop)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in counting:
        raise yaml.YAMLError("an alias refers to a node that holds it (a loop)")
    counting.add(key)
    size = 1 + sum(_expanded_size(child, sizes, counting) for child in _children(node))
    counting.discard(key)
    sizes[key] = size
    return size


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's reason and place, in one line, without the snippet of the file it quotes (a
    line of it may hold a password)."""
    if not isinstance(err, yaml.MarkedYAMLError) or not err.problem:
        return display(" ".join(str(err).split()))
    mark = err.problem_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    context = f"{err.context}: " if err.context else ""
    return display(f"{context}{err.problem}{where}")


def _resolve_paths(spec: StudySpec, base: Path) -> StudySpec:
    """Relative paths written in a spec are taken from the spec's folder: calibration and task
    folders, a local model, a SQLite storage file."""

    def absolute(p: Path | None) -> Path | None:
        return None if p is None or p.is_absolute() else (base / p).resolve()

    cal, ev = spec.calibration, spec.evaluation
    updates: dict[str, object] = {}
    if cal is not None:
        cal_paths = {k: absolute(getattr(cal, k)) for k in ("path", "cache_dir")}
        cal_paths = {k: v for k, v in cal_paths.items() if v is not None}
        if cal_paths:
            updates["calibration"] = cal.model_copy(update=cal_paths)
    if (p := absolute(ev.include_path)) is not None:
        updates["evaluation"] = ev.model_copy(update={"include_path": p})
    if _is_local_path(spec.model, base):
        updates["model"] = str((base / Path(spec.model).expanduser()).resolve())
    if spec.storage and spec.storage.startswith(_SQLITE):
        path = spec.storage.removeprefix(_SQLITE)
        if path and path != ":memory:" and not Path(path).is_absolute():
            updates["storage"] = _SQLITE + str((base / path).resolve())
    return spec.model_copy(update=updates) if updates else spec


_SQLITE = "sqlite:///"


def _is_local_path(model: str, base: Path) -> bool:
    """A model named by a path (``./m``, ``../m``, ``/m``, ``~/m``, or a folder that exists
    there) rather than by a Hugging Face id (``org/name``)."""
    return model.startswith((".", "/", "~")) or (base / model).is_dir()


def with_overrides(spec: StudySpec, model: str | None = None, name: str | None = None) -> StudySpec:
    """``spec`` with the command line's ``--model`` and ``--study-name``.

    A local ``model`` is taken from the working directory. A study of another model than the
    spec's is named after it (``paper-Llama-3.1-8B``), so that its trials do not mix with the
    spec's own; ``name`` overrides that, under the same rules as the spec's ``name``.
    """
    if model:
        local = _is_local_path(model, Path.cwd())
        ref = str(Path(model).expanduser().resolve()) if local else model
        if ref != spec.model:
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(ref).name if local else ref).strip("-")
            spec = spec.model_copy(update={"model": ref, "name": f"{spec.name}-{slug}"})
    if name:
        try:
            check_study_name(name)
        except ValueError as err:
            raise SpecError(f"--study-name: {err}") from None
        spec = spec.model_copy(update={"name": name})
    return spec
