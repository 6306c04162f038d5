"""The Dagster instances (production on Postgres, local on SQLite), the pools that keep one run on the
accelerator and one run per stage, and the asset ``deps`` that must name every pointer an asset reads.

The pool checks go through the run queue's own decision (``GlobalOpConcurrencyLimitsCounter``, what the
``QueuedRunCoordinator`` daemon asks on every tick) on runs created from the real job definitions, so a pool
missing on an asset, or a limit missing in an instance file, makes them fail.
"""

from __future__ import annotations

import ast
import functools
import re
import shutil
import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.op_concurrency_limits_counter import GlobalOpConcurrencyLimitsCounter
from dagster._core.storage.dagster_run import ACTIVE_RUN_STATUSES

from pipelines.definitions import defs

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_INSTANCE = ROOT / "infra" / "dagster" / "dagster.yaml"
LOCAL_INSTANCE = ROOT / "dagster.yaml"
PG = {"host": "127.0.0.1", "port": 5432, "dbname": "test", "user": "postgres"}
GPU_POOL = "gpu"


# --- instances -------------------------------------------------------------------------------------------

def pg_admin():
    """An autocommit connection to the Postgres at 127.0.0.1:5432; the test is skipped, with the reason, when
    psycopg2 is missing or no server answers within 2 s."""
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect(connect_timeout=2, **PG)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no Postgres at {PG['host']}:{PG['port']} (database {PG['dbname']}): {exc}")
    admin.autocommit = True
    return admin


@pytest.fixture
def pg_database():
    """A throwaway database on the Postgres at 127.0.0.1:5432 (``test`` itself where CREATE DATABASE is not
    allowed); skipped when no server answers within 2 s."""
    import psycopg2

    admin = pg_admin()
    name = f"homegrown_instance_{uuid.uuid4().hex[:10]}"
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    except psycopg2.Error:
        name = None
    try:
        yield name or PG["dbname"]
    finally:
        if name:
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _instance_from(config_file: Path, dagster_home: Path) -> dg.DagsterInstance:
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config_file, dagster_home / "dagster.yaml")
    return dg.DagsterInstance.from_config(str(dagster_home))


@pytest.fixture
def production_instance(pg_database, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_PG_HOST", PG["host"])
    monkeypatch.setenv("DAGSTER_PG_PORT", str(PG["port"]))
    monkeypatch.setenv("DAGSTER_PG_DB", pg_database)
    monkeypatch.setenv("DAGSTER_PG_USER", PG["user"])
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "")
    monkeypatch.setenv("HOMEGROWN_BUCKET", "homegrown")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    instance = _instance_from(PRODUCTION_INSTANCE, tmp_path / "dagster-prod")
    yield instance
    instance.dispose()


@pytest.fixture
def local_instance(tmp_path):
    instance = _instance_from(LOCAL_INSTANCE, tmp_path / "dagster-local")
    yield instance
    instance.dispose()


def test_production_instance_stores_runs_in_postgres(production_instance):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    instance = production_instance
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    assert instance.run_monitoring_enabled and instance.run_retries_enabled
    assert instance.run_retries_max_retries == 1 and not instance.run_retries_retry_on_asset_or_op_failure

    run = instance.create_run_for_job(defs.resolve_job_def("retrain_job"))
    stored = instance.get_run_by_id(run.run_id)
    assert stored is not None and stored.job_name == "retrain_job"
    assert GPU_POOL in stored.run_op_concurrency.all_pools


@pytest.mark.parametrize("which", ["local", "production"])
def test_instance_limits_every_pool_to_one_run(which, request):
    instance = request.getfixturevalue(f"{which}_instance")
    pools = instance.get_concurrency_config().pool_config
    assert pools.default_pool_limit == 1
    assert pools.pool_granularity.value == "run"
    assert instance.event_log_storage.supports_global_concurrency_limits


# --- the run queue's decision --------------------------------------------------------------------------------

def _queue_blocks(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Whether the run queue holds ``run`` back for a pool, decided as the QueuedRunCoordinator daemon does."""
    in_progress = instance.get_run_records(filters=dg.RunsFilter(statuses=ACTIVE_RUN_STATUSES))
    granularity = instance.get_concurrency_config().pool_config.pool_granularity
    counter = None
    for _ in range(2):  # the first pass gives each pool seen for the first time the instance's default limit
        counter = GlobalOpConcurrencyLimitsCounter(
            instance, [run], in_progress, concurrency_keys=instance.event_log_storage.get_concurrency_keys(),
            pool_limits=instance.event_log_storage.get_pool_limits(), pool_granularity=granularity)
    return counter.is_blocked(run)


def _asset_run(instance, *assets: str) -> dg.DagsterRun:
    """A run materialising ``assets`` alone, as the UI's Materialize button submits it to the queue (not
    started; a QUEUED status would also need the code location's remote origin)."""
    job = defs.resolve_implicit_global_asset_job_def()
    return instance.create_run_for_job(job,
                                       asset_selection=frozenset(dg.AssetKey(a) for a in assets))


@pytest.mark.parametrize("which", ["local", "production"])
def test_a_second_gpu_run_waits_in_the_queue(which, request):
    """A retrain in progress holds the gpu pool: training, preference tuning or evaluation materialised from
    the UI (no job, no tag) waits in the queue, and goes once the retrain has finished."""
    instance = request.getfixturevalue(f"{which}_instance")
    retrain = instance.create_run_for_job(defs.resolve_job_def("retrain_job"), status=dg.DagsterRunStatus.STARTED)
    for asset in ("lora_adapter", "preference_adapter", "eval_report"):
        assert _queue_blocks(instance, _asset_run(instance, asset)), asset
    second = _asset_run(instance, "lora_adapter")
    instance.report_run_failed(retrain)
    assert not _queue_blocks(instance, second)


@pytest.mark.parametrize("which", ["local", "production"])
def test_no_two_runs_move_the_same_stage(which, request):
    """The hourly curation waits for a retrain (both move raw_interactions, synthetic_examples and
    scored_dataset); a run of unrelated stages does not."""
    instance = request.getfixturevalue(f"{which}_instance")
    curate = instance.create_run_for_job(defs.resolve_job_def("curate_job"), status=dg.DagsterRunStatus.STARTED)
    assert _queue_blocks(instance, instance.create_run_for_job(defs.resolve_job_def("data_job")))
    assert _queue_blocks(instance, _asset_run(instance, "synthetic_examples"))
    assert not _queue_blocks(instance, _asset_run(instance, "roi_report"))
    instance.report_run_failed(curate)
    assert not _queue_blocks(instance, _asset_run(instance, "synthetic_examples"))


# --- pools and deps, read from the asset code ----------------------------------------------------------------

CUDA_USE = re.compile(r"torch\.cuda\.is_available\(")


def _module_file(name: str) -> Path | None:
    for candidate in (ROOT / (name.replace(".", "/") + ".py"), ROOT / name.replace(".", "/") / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def _project_imports(path: Path) -> frozenset[Path]:
    """Files of the project's own modules (homegrown, resources) that ``path`` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found |= {f for n in names if n.split(".")[0] in ("homegrown", "resources") and (f := _module_file(n))}
    return frozenset(found)


@functools.cache
def _picks_cuda(path: Path) -> bool:
    return bool(CUDA_USE.search(path.read_text()))


def uses_accelerator(asset_module: Path) -> bool:
    """Whether code an asset module reaches (its project imports, transitively) picks a CUDA device."""
    seen, todo = set(), list(_project_imports(asset_module))
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if _picks_cuda(path):
            return True
        todo += _project_imports(path)
    return False


def _literal(node: ast.expr | None):
    return ast.literal_eval(node) if node is not None else None


def asset_declarations(assets_dir: Path) -> dict[str, dict]:
    """Each ``@dg.asset`` function: its module, declared ``deps`` and ``pool``, and the pointers its body
    (and the module's helpers it calls) reads through ``latest(...)`` / ``require_latest(...)``."""
    out = {}
    for path in sorted(assets_dir.glob("*.py")):
        tree = ast.parse(path.read_text())
        helpers = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        for fn in helpers.values():
            decorator = next((d for d in fn.decorator_list if isinstance(d, ast.Call)
                              and isinstance(d.func, ast.Attribute) and d.func.attr == "asset"), None)
            if decorator is None:
                continue
            kwargs = {k.arg: k.value for k in decorator.keywords}
            out[fn.name] = {"module": path, "deps": set(_literal(kwargs.get("deps")) or []),
                            "pool": _literal(kwargs.get("pool")), "reads": _reads(fn, helpers)}
    return out


def _reads(fn: ast.FunctionDef, helpers: dict[str, ast.FunctionDef]) -> set[str]:
    reads, seen, todo = set(), set(), [fn]
    while todo:
        current = todo.pop()
        if current.name in seen:
            continue
        seen.add(current.name)
        for node in ast.walk(current):
            if not isinstance(node, ast.Call):
                continue
            if isinstance(node.func, ast.Attribute) and node.func.attr in ("latest", "require_latest"):
                if not (node.args and isinstance(node.args[0], ast.Constant)):
                    raise AssertionError(f"{fn.name}: {node.func.attr}() with a computed stage name; "
                                         "name the stage literally so its dependency can be declared")
                reads.add(node.args[0].value)
            elif isinstance(node.func, ast.Name) and node.func.id in helpers:
                todo.append(helpers[node.func.id])
    return reads


def missing_gpu_pools(declarations: dict[str, dict]) -> list[str]:
    return [name for name, d in declarations.items() if uses_accelerator(d["module"]) and d["pool"] != GPU_POOL]


def undeclared_reads(declarations: dict[str, dict]) -> dict[str, set[str]]:
    gaps = {name: d["reads"] - d["deps"] - {name} for name, d in declarations.items()}
    return {name: gap for name, gap in gaps.items() if gap}


def _planted_copy(tmp_path: Path, file: str, old: str, new: str) -> Path:
    copy = tmp_path / "assets"
    shutil.copytree(ROOT / "assets", copy)
    text = (copy / file).read_text()
    assert text.count(old) == 1, f"the plant {old!r} is not in assets/{file} once"
    (copy / file).write_text(text.replace(old, new))
    return copy


def test_every_accelerator_asset_is_in_the_gpu_pool():
    declarations = asset_declarations(ROOT / "assets")
    accelerated = {name for name, d in declarations.items() if uses_accelerator(d["module"])}
    assert {"lora_adapter", "preference_adapter", "eval_report"} <= accelerated
    assert missing_gpu_pools(declarations) == []


def test_a_planted_accelerator_asset_without_the_pool_is_caught(tmp_path):
    copy = _planted_copy(tmp_path, "training.py", 'pool="gpu"', 'pool="trainer"')
    assert missing_gpu_pools(asset_declarations(copy)) == ["lora_adapter"]


def test_every_stage_has_its_own_pool():
    declarations = asset_declarations(ROOT / "assets")
    for name, d in declarations.items():
        assert d["pool"] in (GPU_POOL, f"stage_{name}"), f"{name} has pool {d['pool']!r}"


def test_every_pointer_an_asset_reads_is_in_its_deps():
    assert undeclared_reads(asset_declarations(ROOT / "assets")) == {}


def test_a_planted_missing_dep_is_caught(tmp_path):
    copy = _planted_copy(tmp_path, "evaluation.py", '"lora_adapter", "raw_interactions", ', '"raw_interactions", ')
    assert undeclared_reads(asset_declarations(copy)) == {"eval_report": {"lora_adapter"}}


def test_the_code_read_is_what_dagster_loads():
    """The AST reading above agrees with the loaded definitions (so the checks test what Dagster runs)."""
    declarations = asset_declarations(ROOT / "assets")
    graph = defs.resolve_asset_graph()
    by_key = {a.key.to_user_string(): a for a in defs.assets if isinstance(a, dg.AssetsDefinition)}
    assert set(declarations) == set(by_key)
    for name, d in declarations.items():
        assert by_key[name].op.pool == d["pool"], name
        parents = {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}
        assert parents == d["deps"], name


# --- which instance file the CLI puts in DAGSTER_HOME ------------------------------------------------------

def test_the_cli_instance_follows_homegrown_env_and_keeps_an_operators_own(hg_home, monkeypatch):
    from homegrown.cli import prepare_dagster_home

    target = hg_home / "dagster" / "dagster.yaml"
    prepare_dagster_home()
    assert target.read_bytes() == LOCAL_INSTANCE.read_bytes()
    monkeypatch.setenv("HOMEGROWN_ENV", "production")
    prepare_dagster_home()
    assert target.read_bytes() == PRODUCTION_INSTANCE.read_bytes()
    own = "# my instance\nstorage:\n  sqlite:\n    base_dir: /srv/dagster\n"
    target.write_text(own)
    prepare_dagster_home()
    assert target.read_text() == own
