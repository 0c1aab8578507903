"""cluster/: the cluster configs, scripts and their README, checked against the real tools.

Nothing here starts a cluster. The files are parsed as their tools parse them: the AWS
launcher's config against Ray's own schema and config checks, every ``gammaray``, ``ray`` and
``mlflow`` command line (in scripts, YAML command lists and the README's shell blocks) with
the installed click CLIs, so that a misspelt option fails here and not on a GPU cluster. Then
the files must agree with each other (ports, images, versions) and with the GPU grids they
are sized for.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import click
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
README = CLUSTER / "README.md"
AWS = CLUSTER / "ray-aws.yaml"
KUBERAY = CLUSTER / "kuberay-raycluster.yaml"
DOCKERFILE = CLUSTER / "Dockerfile"
SBATCH = CLUSTER / "slurm-ray.sbatch"
COMPOSE = CLUSTER / "mlflow" / "docker-compose.yaml"
MLFLOW_DOCKERFILE = CLUSTER / "mlflow" / "Dockerfile"
START_MLFLOW = CLUSTER / "mlflow" / "start-mlflow.sh"

GCS_PORT, DASHBOARD_PORT, CLIENT_PORT, MLFLOW_PORT, POSTGRES_PORT = 6379, 8265, 10001, 5000, 5432
RAY_IMAGE = re.compile(
    r"^rayproject/ray:(?P<version>\d+\.\d+\.\d+)-(?P<python>py39|py310|py311|py312)(?P<flavor>-gpu|-cpu)?$"
)
TOOLS = ("gammaray", "ray", "mlflow")

# Importing Ray's and MLflow's CLIs warns about their own dependencies' deprecations.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}


# --- the files' commands -------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    tool: str  # gammaray, ray or mlflow
    words: tuple[str, ...]  # after the tool's name, shell variables expanded

    def __str__(self) -> str:
        return f"{self.where}: {self.tool} {shlex.join(self.words)}"


def expand(word: str, env: dict[str, str]) -> str:
    """A word with its shell expansions replaced: known variables by their value,
    ``${X:-default}`` by the default, unknown variables and ``$(...)`` by ``1`` (a value every
    option type accepts), ``$@`` by nothing."""
    out, i = [], 0
    while i < len(word):
        char = word[i]
        if char != "$" or i + 1 == len(word):
            out.append(char)
            i += 1
        elif word[i + 1] in "({":
            end = _matching(word, i + 1)
            out.append("1" if word[i + 1] == "(" else _parameter(word[i + 2 : end], env))
            i = end + 1
        elif word[i + 1] in "@*":
            i += 2
        elif re.match(r"\w", word[i + 1]):
            name = re.match(r"\w+", word[i + 1 :]).group(0)
            out.append(env.get(name, "1"))
            i += 1 + len(name)
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _matching(word: str, start: int) -> int:
    opener, closer, depth = word[start], {"(": ")", "{": "}"}[word[start]], 0
    for j in range(start, len(word)):
        depth += (word[j] == opener) - (word[j] == closer)
        if depth == 0:
            return j
    raise ValueError(f"unbalanced {opener!r} in {word!r}")


def _parameter(inner: str, env: dict[str, str]) -> str:
    match = re.fullmatch(r"(\w+)(?::?([-=?+])(.*))?", inner, re.DOTALL)
    if not match:  # ${#x}, ${x#pattern}, ...
        return "1"
    name, op, rest = match.groups()
    if name in env:
        return env[name]
    return expand(rest, env) if op in ("-", "=") else "1"


def shell_commands(
    text: str, where: str, first_line: int = 1, env: dict[str, str] | None = None
) -> list[Command]:
    """The gammaray/ray/mlflow commands of a shell text, with the file's own variable
    assignments (``X="${X:-5000}"``) applied to what follows them."""
    env = {} if env is None else env
    found = []
    for number, line in _logical_lines(text):
        for inner in _substitutions(line):  # $(ray get-auth-token ...) is a command too
            found += shell_commands(inner, where, first_line + number - 1, env)
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        for words in _simple_commands(list(lexer)):
            assignments = words[1:] if words[:1] == ["export"] else words
            if assignments and all(re.match(r"^\w+=", w) for w in assignments):
                for assignment in assignments:
                    name, value = assignment.split("=", 1)
                    env[name] = expand(value, env)
                continue
            command = _command(words, env, f"{where}:{first_line + number - 1}")
            if command:
                found.append(command)
    return found


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) with backslash continuations joined and here-documents skipped."""
    lines, i = text.splitlines(), 0
    while i < len(lines):
        number, line = i + 1, lines[i]
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1] + " " + lines[i]
        i += 1
        yield number, line
        heredoc = re.search(r"(?<!<)<<-?\s*['\"]?(\w+)['\"]?", line)
        if heredoc and not line.lstrip().startswith("#"):
            while i < len(lines) and lines[i].strip() != heredoc.group(1):
                i += 1
            i += 1


def _substitutions(line: str) -> list[str]:
    found, start = [], 0
    while (i := line.find("$(", start)) >= 0:
        end = _matching(line, i + 1)
        found.append(line[i + 2 : end])
        start = end + 1
    return found


def _simple_commands(tokens: list[str]) -> Iterator[list[str]]:
    """Split at ; & && || | ( ) and redirections (a redirection's fd number is dropped)."""
    current: list[str] = []
    for token in tokens:
        if token and all(c in "();<>|&" for c in token):
            if token[0] in "<>" and current and current[-1].isdigit():
                current.pop()
            yield current
            current = []
        else:
            current.append(token)
    yield current


def _command(words: list[str], env: dict[str, str], where: str) -> Command | None:
    for i, word in enumerate(words):
        name = word.rsplit("/", 1)[-1]
        if name in TOOLS and (word == name or word.endswith(f"/bin/{name}")):
            rest = words[i + 1 :]
            if rest and not rest[0].startswith("-"):
                expanded = [expand(w, env) for w in rest if w not in ("$@", "$*")]
                return Command(where, name, tuple(expanded))
    return None


def readme_commands(path: Path = README) -> list[Command]:
    """Commands of the shell code blocks of a markdown file (a ``$ `` prompt is dropped)."""
    found, env = [], {}
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*```(\w*)\s*$", lines[i])
        i += 1
        if not fence:
            continue
        start = i
        while i < len(lines) and not lines[i].strip().startswith("```"):
            i += 1
        if fence.group(1) in SHELL_FENCES:
            block = "\n".join(re.sub(r"^\s*\$ ", "", line) for line in lines[start:i])
            found += shell_commands(block, path.relative_to(REPO).as_posix(), start + 1, env)
        i += 1
    return found


def yaml_command_lists(node: Any, where: str) -> list[Command]:
    """Commands in the launcher's ``*_commands`` lists, wherever they are."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith("_commands") and isinstance(value, list):
                for text in value:
                    found += shell_commands(text, f"{where}:{key}")
            else:
                found += yaml_command_lists(value, where)
    elif isinstance(node, list):
        for item in node:
            found += yaml_command_lists(item, where)
    return found


def compose_commands() -> list[Command]:
    found = []
    for name, service in load_yaml(COMPOSE)["services"].items():
        command = service.get("command")
        where = f"cluster/mlflow/docker-compose.yaml:{name}"
        if isinstance(command, list):
            found.append(_command([str(w) for w in command], {}, where))
        elif isinstance(command, str):
            found += shell_commands(command, where)
    return [c for c in found if c]


def kuberay_commands() -> list[Command]:
    """KubeRay turns each rayStartParams key into ``--key=value`` of ``ray start``."""
    cluster = kuberay_cluster()["spec"]
    groups = [("head", cluster["headGroupSpec"], ["--head"])]
    groups += [(g["groupName"], g, [f"--address=head:{GCS_PORT}"]) for g in cluster["workerGroupSpecs"]]
    return [
        Command(
            f"cluster/kuberay-raycluster.yaml:{name}",
            "ray",
            ("start", *base, *(f"--{k}={v}" for k, v in group["rayStartParams"].items())),
        )
        for name, group, base in groups
    ]


def dockerfile_commands(path: Path) -> list[Command]:
    text = re.sub(r"\\\n", " ", path.read_text())
    found = []
    for match in re.finditer(r"^RUN\s+(.*)$", text, re.MULTILINE):
        found += shell_commands(match.group(1), path.relative_to(REPO).as_posix())
    return found


def all_commands() -> list[Command]:
    commands = readme_commands()
    for script in sorted([*CLUSTER.rglob("*.sh"), *CLUSTER.rglob("*.sbatch")]):
        commands += shell_commands(script.read_text(), script.relative_to(REPO).as_posix())
    commands += yaml_command_lists(load_yaml(AWS), "cluster/ray-aws.yaml")
    commands += compose_commands() + kuberay_commands()
    commands += dockerfile_commands(DOCKERFILE) + dockerfile_commands(MLFLOW_DOCKERFILE)
    return commands


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def kuberay_cluster() -> dict[str, Any]:
    (cluster,) = [d for d in yaml.safe_load_all(KUBERAY.read_text()) if d and d.get("kind") == "RayCluster"]
    return cluster


# --- the real command lines ----------------------------------------------------------------


@pytest.fixture(scope="module")
def clis() -> dict[str, click.Group]:
    from mlflow.cli import cli as mlflow_cli
    from ray.scripts.scripts import cli as ray_cli

    from orchestrator.cli.main import main

    return {"gammaray": main, "ray": ray_cli, "mlflow": mlflow_cli}


def parse(group: click.Group, tool: str, words: tuple[str, ...]) -> click.Context:
    """Parse ``tool words...`` as the tool would (raises click.UsageError on a bad option)."""
    words = list(words)
    parent = click.Context(group, info_name=tool)
    command: click.Command = group
    name = tool
    while isinstance(command, click.Group):
        if not words:
            raise click.UsageError(f"{tool}: a subcommand is missing")
        name, words = words[0], words[1:]
        sub = command.get_command(parent, name)
        if sub is None:
            raise click.UsageError(f"{tool}: no command {name!r}")
        if isinstance(sub, click.Group):
            parent = click.Context(sub, info_name=name, parent=parent)
        command = sub
    if (
        tool == "gammaray"
        and name == "submit"
        and "--detach" in words
        and not _has_option(command, "--detach")
    ):
        # TODO: `submit --detach` is being added to orchestrator/cli/commands.py; drop this once it is there.
        words.remove("--detach")
    return command.make_context(name, words, parent=parent)


def _has_option(command: click.Command, option: str) -> bool:
    return any(option in p.opts for p in command.params)


COMMANDS = all_commands()


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_every_command_line_parses_with_the_real_cli(command: Command, clis) -> None:
    try:
        parse(clis[command.tool], command.tool, command.words)
    except click.UsageError as error:
        pytest.fail(f"{command}\n  {error.format_message()}")


def test_the_files_hold_the_commands_the_docs_promise() -> None:
    """A guard for the extractor itself: an extraction that finds nothing checks nothing."""

    def count(source: str, tool: str, *words: str) -> int:
        return sum(
            c.where.startswith(source) and c.tool == tool and c.words[: len(words)] == words for c in COMMANDS
        )

    readme = "cluster/README.md"
    for sub in ("submit", "status", "cancel", "report"):
        assert count(readme, "gammaray", sub), f"README: no `gammaray {sub}` in a shell block"
    assert (
        count(readme, "ray", "up")
        and count(readme, "ray", "dashboard")
        and count(readme, "ray", "job", "stop")
    )
    assert count("cluster/slurm-ray.sbatch", "gammaray", "submit") == 1
    assert count("cluster/slurm-ray.sbatch", "ray", "start") == 2  # the head and the workers
    assert count("cluster/slurm-ray.sbatch", "ray", "get-auth-token") == 1  # inside $(...)
    assert count("cluster/ray-aws.yaml:head_start_ray_commands", "ray", "start") == 1
    assert count("cluster/ray-aws.yaml:worker_start_ray_commands", "ray", "start") == 1
    assert count("cluster/mlflow/start-mlflow.sh", "mlflow", "server") == 1
    assert count("cluster/mlflow/docker-compose.yaml", "mlflow", "server") == 1
    assert count("cluster/kuberay-raycluster.yaml", "ray", "start") == 2


def test_the_checks_catch_mistakes(clis) -> None:
    """Typical slips fail: a misspelt option of each tool, a missing argument, an unknown
    subcommand; and commands are found behind srun, in $(...), after ; and across lines."""
    snippet = """
    X="${X:-7}"
    srun -w "$node" ray start --head --dashbord-port=8265 &
    token="$(ray get-auth-tokn --generate 2>/dev/null)"
    ulimit -n 1; .venv/bin/gammaray submit grids/smoke.yaml --adress http://h:8265
    gammaray status
    exec mlflow server \\
      --allowed-host "$X"
    cat <<'EOF'
    gammaray this-is-not-parsed
    EOF
    """
    commands = shell_commands(snippet, "snippet")
    assert [c.tool for c in commands] == ["ray", "ray", "gammaray", "gammaray", "mlflow"]
    assert commands[-1].words == ("server", "--allowed-host", "7")
    for command in commands:
        with pytest.raises(click.UsageError):
            parse(clis[command.tool], command.tool, command.words)
    good = shell_commands('P="${P:-5000}"\nmlflow server --port "$P" --host 0.0.0.0 "$@"', "good")
    assert parse(clis["mlflow"], "mlflow", good[0].words).params["port"] == 5000


def test_grids_named_in_commands_exist() -> None:
    named = {
        w
        for c in COMMANDS
        if c.tool == "gammaray"
        for w in c.words
        if re.fullmatch(r"grids/[\w.-]+\.ya?ml", w)
    }
    assert "grids/cluster-gamma.yaml" in named
    missing = sorted(g for g in named if not (REPO / g).is_file())
    assert not missing, f"grid files named in cluster/ that do not exist: {missing}"


# --- ports ---------------------------------------------------------------------------------


def test_ports_agree_everywhere(clis) -> None:
    """6379 GCS, 8265 dashboard and jobs, 5000 MLflow, 5432 PostgreSQL, in every file."""
    problems = []
    for command in COMMANDS:
        params = parse(clis[command.tool], command.tool, command.words).params
        sub = command.words[0]
        if command.tool == "ray" and sub == "start":
            if params.get("head"):
                if params.get("port") not in (None, GCS_PORT):
                    problems.append(f"{command}: GCS port is not {GCS_PORT}")
                if params.get("dashboard_port") not in (None, DASHBOARD_PORT):
                    problems.append(f"{command}: dashboard port is not {DASHBOARD_PORT}")
                if params.get("dashboard_host") != "0.0.0.0":
                    problems.append(f"{command}: the dashboard must listen beyond localhost")
            elif not str(params.get("address", "")).endswith(f":{GCS_PORT}"):
                problems.append(f"{command}: a worker must join the GCS on :{GCS_PORT}")
        if (
            command.tool == "ray"
            and sub == "dashboard"
            and params.get("remote_port") not in (None, DASHBOARD_PORT)
        ):
            problems.append(f"{command}: remote port is not {DASHBOARD_PORT}")
        if command.tool == "mlflow" and sub == "server" and params.get("port") != MLFLOW_PORT:
            problems.append(f"{command}: MLflow is not on {MLFLOW_PORT}")
        address = params.get("address")
        if command.tool in ("gammaray", "ray") and sub != "start" and isinstance(address, str):
            if address.startswith(("http://", "https://")):
                if urlparse(address).port != DASHBOARD_PORT:
                    problems.append(f"{command}: a dashboard address must use port {DASHBOARD_PORT}")
            elif address != "auto" and not address.endswith(f":{GCS_PORT}"):
                problems.append(f"{command}: a GCS address must use port {GCS_PORT}")
        uri = params.get("tracking_uri")
        if isinstance(uri, str) and uri.startswith("http") and urlparse(uri).port != MLFLOW_PORT:
            problems.append(f"{command}: the MLflow server is on port {MLFLOW_PORT}")
    assert not problems, "\n".join(problems)


def test_postgres_is_on_5432_and_only_mlflow_reaches_it() -> None:
    compose = load_yaml(COMPOSE)["services"]
    uris = [
        expand(str(v), {}) for v in compose["mlflow"]["environment"].values() if "postgresql://" in str(v)
    ]
    env: dict[str, str] = {}
    shell_commands(START_MLFLOW.read_text(), "start-mlflow.sh", env=env)
    uris += [v for v in env.values() if v.startswith("postgresql://")]
    assert len(uris) == 2, uris
    for uri in uris:
        parsed = urlparse(uri)
        assert parsed.port == POSTGRES_PORT and parsed.path == "/mlflow" and parsed.username == "mlflow", uri
    assert "ports" not in compose["postgres"], "PostgreSQL must stay on the compose network"
    assert compose["mlflow"]["ports"] == [f"{MLFLOW_PORT}:{MLFLOW_PORT}"]
    health = " ".join(compose["postgres"]["healthcheck"]["test"])
    assert "pg_isready" in health and f"-p {POSTGRES_PORT}" in health
    assert compose["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_readme_port_table_lists_the_ports_used() -> None:
    table = set(map(int, re.findall(r"^\|\s*(\d{4,5})\s*\|", README.read_text(), re.MULTILINE)))
    assert table == {GCS_PORT, DASHBOARD_PORT, CLIENT_PORT, MLFLOW_PORT, POSTGRES_PORT}


# --- the AWS launcher ----------------------------------------------------------------------


def test_cluster_yaml_files_parse() -> None:
    files = sorted(CLUSTER.rglob("*.yaml")) + sorted(CLUSTER.rglob("*.yml"))
    assert {AWS, KUBERAY, COMPOSE} <= set(files)
    for path in files:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert documents and all(isinstance(d, dict) for d in documents), path


def test_ray_aws_config_is_valid_for_the_installed_launcher() -> None:
    """Ray's own schema (additionalProperties: false, so a misspelt key fails), then the
    checks `ray up` itself runs after filling in the provider's defaults."""
    import copy

    import jsonschema
    import ray
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = load_yaml(AWS)
    jsonschema.validate(config, schema)
    validate_config(prepare_config(copy.deepcopy(config)))

    misspelt = {**copy.deepcopy(config), "worker_start_ray_command": []}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(misspelt, schema)
    too_small = copy.deepcopy(config)
    too_small["max_workers"] = 0
    with pytest.raises(ValueError, match="max_workers"):
        validate_config(prepare_config(too_small))


def ray_images() -> dict[str, str]:
    """Every Ray image the cluster files name: where -> image."""
    config = load_yaml(AWS)
    images = {f"ray-aws.yaml docker.{k}": v for k, v in config["docker"].items() if k.endswith("image")}
    for name, node in config["available_node_types"].items():
        if "docker" in node and "worker_image" in node["docker"]:
            images[f"ray-aws.yaml {name}.docker.worker_image"] = node["docker"]["worker_image"]
    (base,) = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    images["Dockerfile FROM"] = base
    return images


def test_ray_images_are_the_installed_ray_version() -> None:
    import ray

    images = ray_images()
    assert "ray-aws.yaml docker.image" in images
    pythons = set()
    for where, image in images.items():
        match = RAY_IMAGE.match(image)
        assert match, f"{where}: {image} is not a rayproject/ray:<version>-py3X[-gpu|-cpu] image"
        assert match["version"] == ray.__version__, f"{where}: {image} is not Ray {ray.__version__}"
        pythons.add(match["python"])
    assert len(pythons) == 1, f"the images disagree on Python: {images}"
    assert RAY_IMAGE.match(images["ray-aws.yaml docker.image"])["flavor"] == "-gpu"  # the GPU workers' image
    assert RAY_IMAGE.match(images["Dockerfile FROM"])["flavor"] == "-gpu"
    assert kuberay_cluster()["spec"]["rayVersion"] == ray.__version__


def cluster_grids() -> list[dict[str, Any]]:
    grids = [load_yaml(p) for p in sorted((REPO / "grids").glob("cluster-*.yaml"))]
    assert grids, "no grids/cluster-*.yaml"
    return grids


def run_needs(grid: dict[str, Any]) -> tuple[float, float]:
    """CPUs and GPUs of one run of a grid (its processes together)."""
    resources = grid.get("resources", {})
    processes = resources.get("processes", 1)
    return processes * resources.get("cpus", 1), processes * resources.get("gpus", 0)


def test_aws_node_types_fit_the_cluster_grids() -> None:
    """GPU workers request GPUs, the head none; a whole run of every cluster grid fits on one
    GPU node type that is up from the start (the driver counts the nodes that are up)."""
    config = load_yaml(AWS)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    assert workers and all(t["resources"].get("GPU", 0) >= 1 for t in workers.values()), workers
    up = [t["resources"] for t in workers.values() if t.get("min_workers", 0) > 0]
    assert up, "no GPU node type starts with the cluster"
    for grid in cluster_grids():
        cpus, gpus = run_needs(grid)
        assert gpus >= 1, grid["name"]
        assert any(r["CPU"] >= cpus and r["GPU"] >= gpus for r in up), (
            f"{grid['name']}: a run fits no node that is up"
        )


# --- KubeRay -------------------------------------------------------------------------------


def test_kuberay_cluster_has_the_head_ports_a_gpu_group_and_a_shared_workspace() -> None:
    documents = [d for d in yaml.safe_load_all(KUBERAY.read_text()) if d]
    cluster = kuberay_cluster()
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    (head_container,) = head["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in head_container["ports"]}
    assert ports == {"gcs-server": GCS_PORT, "dashboard": DASHBOARD_PORT, "client": CLIENT_PORT}
    assert "nvidia.com/gpu" not in head_container["resources"]["limits"]

    claims = {d["metadata"]["name"]: d for d in documents if d["kind"] == "PersistentVolumeClaim"}
    grids = cluster_grids()
    gpu_groups = []
    for group in spec["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        limits = container["resources"]["limits"]
        if int(limits.get("nvidia.com/gpu", 0)) >= 1:
            gpu_groups.append(group)
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
            for grid in grids:
                cpus, gpus = run_needs(grid)
                assert int(limits["nvidia.com/gpu"]) >= gpus and float(limits["cpu"]) >= cpus, grid["name"]
    assert gpu_groups, "no worker group with nvidia.com/gpu"

    for pod in [head["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]:
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            shared = volumes[mounts["/mnt/shared"]]["persistentVolumeClaim"]["claimName"]
            assert "ReadWriteMany" in claims[shared]["spec"]["accessModes"]
            assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
            env = {e["name"]: e for e in container["env"]}
            assert env["GAMMARAY_HOME"]["value"].startswith("/mnt/shared/")
            assert env["RAY_AUTH_MODE"]["value"] == "token" and "RAY_AUTH_TOKEN" in env


# --- images and scripts --------------------------------------------------------------------


def test_dockerfile_installs_gammaray_on_the_ray_image() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^RUN pip install .*\"\$TORCH_SPEC\"", text, re.MULTILINE), "torch is not installed"
    assert re.search(r"^COPY .* \. /home/ray/gammaray$", text, re.MULTILINE)
    assert re.search(r"pip install --no-cache-dir /home/ray/gammaray", text)
    assert re.search(r"^ENV GAMMARAY_HOME=/mnt/shared/", text, re.MULTILINE)
    ignored = (CLUSTER / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", "gammaray-runs", ".git"} <= set(ignored)


def test_mlflow_images_are_the_installed_mlflow() -> None:
    from importlib.metadata import version

    (base,) = re.findall(r"^FROM\s+(\S+)", MLFLOW_DOCKERFILE.read_text(), re.MULTILINE)
    assert base == f"ghcr.io/mlflow/mlflow:v{version('mlflow')}"
    assert "psycopg2" in MLFLOW_DOCKERFILE.read_text()
    assert f"mlflow=={version('mlflow')}" in START_MLFLOW.read_text()


def test_environment_variables_named_in_the_files_exist_in_the_tools(clis) -> None:
    """The option behind MLFLOW_BACKEND_STORE_URI, MLflow's job switch, Ray's token variables."""
    import mlflow.environment_variables as mlflow_env
    import ray

    server = clis["mlflow"].commands["server"]
    (store,) = [p for p in server.params if "--backend-store-uri" in p.opts]
    assert store.envvar == "MLFLOW_BACKEND_STORE_URI"
    assert mlflow_env.MLFLOW_SERVER_ENABLE_JOB_EXECUTION.name == "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
    ray_root = Path(ray.__file__).parent
    sources = (ray_root / "exceptions.py").read_text()
    sources += (ray_root / "_private" / "authentication" / "authentication_token_setup.py").read_text()
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token"):
        assert name in sources, f"{name} is not Ray {ray.__version__}'s any more: check cluster/"


def shell_scripts() -> list[Path]:
    return sorted([*CLUSTER.rglob("*.sh"), *CLUSTER.rglob("*.sbatch")])


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_shell_script_is_valid_bash(script: Path) -> None:
    result = subprocess.run(
        ["bash", "-n", str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    if script.suffix == ".sh":
        assert os.access(script, os.X_OK), f"{script.name} is not executable"


def test_bash_n_rejects_a_broken_script(tmp_path: Path) -> None:
    broken = tmp_path / "broken.sh"
    broken.write_text("#!/usr/bin/env bash\nif true; then\n  echo missing fi\n")
    assert (
        subprocess.run(["bash", "-n", str(broken)], capture_output=True, timeout=30, check=False).returncode
        != 0
    )


def test_slurm_allocation_fits_the_cluster_grids() -> None:
    options = dict(re.findall(r"^#SBATCH\s+--([\w-]+)=(\S+)", SBATCH.read_text(), re.MULTILINE))
    assert options.get("ntasks-per-node") == "1"  # one `ray start` per node
    for grid in cluster_grids():
        cpus, gpus = run_needs(grid)
        assert int(options["gpus-per-node"]) >= gpus and int(options["cpus-per-task"]) >= cpus, grid["name"]


def test_readme_describes_every_file_of_the_folder() -> None:
    text = README.read_text()
    files = [p.relative_to(CLUSTER).as_posix() for p in CLUSTER.rglob("*") if p.is_file() and p != README]
    missing = sorted(f for f in files if f"`{f}`" not in text)
    assert not missing, f"cluster/README.md does not mention {missing}"
