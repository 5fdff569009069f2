"""The deployable configs in cluster/ are checked against what they name.

- cluster/aws.yaml against the JSON schema shipped inside the installed ``ray`` package (the check `ray up`
  itself runs first), and its `ray start` commands against Ray's own CLI parser;
- the KubeRay manifests for the fields the KubeRay operator requires, their `rayStartParams` turned into the
  `ray start` command KubeRay builds and parsed by Ray's CLI;
- every entrypoint, CLI flag and import path they name against the project itself: the real
  ``raydetect.cli.build_parser()`` and the real ``raydetect.serve:app``, so a renamed flag or a moved
  application breaks a test rather than a deployment;
- the security rules of docs/cluster.md: token auth on everywhere, no dashboard or job API on a public
  address, the endpoint token coming from a Kubernetes secret.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster"
AWS_CONFIG = CLUSTER / "aws.yaml"
RAYJOB = CLUSTER / "kuberay" / "rayjob.yaml"
RAYSERVICE = CLUSTER / "kuberay" / "rayservice.yaml"
SERVE_CONFIG = CLUSTER / "serve.yaml"
DOCKERFILE = CLUSTER / "Dockerfile"
CLUSTER_DOC = REPO / "docs" / "cluster.md"

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
CONTROL_PLANE_PORTS = {6379, 8265, 10001}  # GCS, dashboard / job API, Ray client


# --------------------------------------------------------------------------------------------- helpers


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def pinned_ray_version() -> str:
    """The exact Ray version pyproject.toml pins (``ray[...]==X.Y.Z``)."""
    for requirement in _pyproject()["project"]["dependencies"]:
        match = re.fullmatch(r"ray(\[[^\]]*\])?==([0-9.]+)", requirement.replace(" ", ""))
        if match:
            return match.group(2)
    raise AssertionError("pyproject.toml does not pin ray with ==")


def project_version() -> str:
    return _pyproject()["project"]["version"]


def load_yaml_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def ray_start_option_names() -> set[str]:
    from ray.scripts.scripts import start

    return {opt for param in start.params for opt in param.opts + param.secondary_opts}


def parse_ray_start(argv: list[str]) -> dict:
    """Parse `ray start` arguments with Ray's own click command; raise on an unknown flag or bad value."""
    from ray.scripts.scripts import start

    known = ray_start_option_names()
    for token in argv:
        if token.startswith("--"):
            assert token.split("=", 1)[0] in known, f"`ray start` has no option {token!r}"
    context = start.make_context("ray start", list(argv))
    return context.params


def shell_commands(line: str) -> list[list[str]]:
    """Split one shell line into simple commands (on ``;``, ``&&``, ``||``), each as argv tokens."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token and set(token) <= set(";&|"):
            if current:
                commands.append(current)
            current = []
        else:
            current.append(token)
    if current:
        commands.append(current)
    return commands


def split_env_prefix(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """``A=1 B=2 cmd args`` -> ({"A": "1", "B": "2"}, ["cmd", "args"])."""
    env = {}
    index = 0
    while index < len(argv) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[index]):
        name, value = argv[index].split("=", 1)
        env[name] = value
        index += 1
    return env, argv[index:]


def ray_start_invocations(lines: list[str]) -> list[tuple[dict[str, str], list[str]]]:
    """Every `ray start` in a list of launcher commands: (environment it runs with, its arguments)."""
    found = []
    for line in lines:
        exported: dict[str, str] = {}
        for argv in shell_commands(line):
            if argv and argv[0] == "export":
                exported.update(split_env_prefix(argv[1:])[0])
                continue
            env, command = split_env_prefix(argv)
            if command[:2] == ["ray", "start"]:
                found.append(({**exported, **env}, command[2:]))
    return found


def kuberay_ray_start_argv(params: dict[str, str], head: bool) -> list[str]:
    """The `ray start` arguments KubeRay builds from rayStartParams (its convertParamMap rules)."""
    explicit_bool = {"log-color", "include-dashboard", "include-log-monitor"}
    argv = ["--head"] if head else ["--address=raydetect-head-svc:6379"]
    for key, value in sorted(params.items()):
        if value.lower() in ("true", "false") and key not in explicit_bool:
            if value.lower() == "true":
                argv.append(f"--{key}")
        else:
            argv.append(f"--{key}={value}")
    return argv


def detect_subparser() -> argparse.ArgumentParser:
    from raydetect.cli import build_parser

    parser = build_parser()
    for action in parser._actions:  # argparse keeps sub-parsers only here
        if isinstance(action, argparse._SubParsersAction):
            assert "detect" in action.choices, "raydetect has no `detect` command"
            return action.choices["detect"]
    raise AssertionError("raydetect's parser has no sub-commands")


def assert_detect_arguments_exist(arguments: list[str]) -> argparse.Namespace:
    """The arguments of `raydetect detect` / jobs/detect_videos.py parse with the real parser.

    Each ``--flag`` must be spelled exactly as the parser defines it: argparse would otherwise accept a
    unique prefix, so a renamed flag whose old name is a prefix of the new one would slip through.
    """
    from raydetect.cli import build_parser

    subparser = detect_subparser()
    options = {opt for action in subparser._actions for opt in action.option_strings}
    for token in arguments:
        if token.startswith("--"):
            assert token.split("=", 1)[0] in options, f"`raydetect detect` has no option {token!r}"
    try:
        return build_parser().parse_args(["detect", *arguments])
    except SystemExit as exc:  # argparse reports and exits on a bad argument
        raise AssertionError(f"`raydetect detect {shlex.join(arguments)}` does not parse") from exc


def assert_job_entrypoint(entrypoint: str) -> argparse.Namespace:
    """``python jobs/detect_videos.py ARGS``: the script exists and ARGS parse as `raydetect detect` ARGS."""
    argv = shlex.split(entrypoint)
    assert argv[:2] == ["python", "jobs/detect_videos.py"], f"unexpected entrypoint {entrypoint!r}"
    assert (REPO / argv[1]).is_file(), f"{argv[1]} does not exist"
    return assert_detect_arguments_exist(argv[2:])


# ------------------------------------------------------------------------------------ AWS launcher


@pytest.fixture(scope="module")
def aws() -> dict:
    return yaml.safe_load(AWS_CONFIG.read_text())


def test_launcher_config_matches_the_schema_shipped_with_ray(aws):
    import jsonschema
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    jsonschema.validate(aws, schema)


def test_launcher_config_passes_ray_up_validation_after_defaults_are_merged(aws):
    # The same two steps `ray up` runs before it talks to AWS (no cloud call is made here).
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(aws)
    prepared = prepare_config(copy.deepcopy(aws))
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_launcher_head_schedules_no_work(aws):
    head = aws["available_node_types"][aws["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert head["resources"].get("GPU", 0) == 0


def test_launcher_has_an_autoscaling_gpu_worker_type(aws):
    gpu_types = {
        name: spec
        for name, spec in aws["available_node_types"].items()
        if name != aws["head_node_type"] and spec["resources"].get("GPU", 0) >= 1
    }
    assert gpu_types, "no worker node type advertises a GPU"
    for name, spec in gpu_types.items():
        assert spec.get("min_workers", 0) < spec["max_workers"], f"{name} cannot scale"
        assert spec["resources"].get("CPU", 0) >= 1, f"{name} has no CPU for decoding next to its GPU"
    worker_max = sum(
        spec.get("max_workers", 0) for name, spec in aws["available_node_types"].items() if name != aws["head_node_type"]
    )
    assert aws["max_workers"] >= worker_max


def test_launcher_images_match_the_ray_pin(aws):
    version = pinned_ray_version()
    python_tag = "py{}{}".format(*sys.version_info[:2])
    images = [aws["docker"]["image"], aws["docker"].get("head_image"), aws["docker"].get("worker_image")]
    images += [spec.get("docker", {}).get("worker_image") for spec in aws["available_node_types"].values()]
    images = [image for image in images if image]
    assert images
    for image in images:
        assert re.fullmatch(rf"rayproject/ray:{re.escape(version)}-{python_tag}-(gpu|cpu|cu\d+)", image), image
    assert aws["docker"]["image"].endswith("-gpu"), "the GPU workers need the CUDA image"


def test_launcher_installs_the_project_on_every_node(aws):
    mounts = {remote: local for remote, local in aws["file_mounts"].items()}
    project_dirs = [remote for remote, local in mounts.items() if Path(local) == Path(".")]
    assert project_dirs, "the project checkout is not copied to the nodes"
    project_dir = project_dirs[0]

    def installs_project(commands: list[str]) -> bool:
        for line in commands:
            for argv in shell_commands(line):
                if argv[:2] == ["pip", "install"] and any(arg.split("[")[0] == project_dir for arg in argv):
                    return True
        return False

    for name, spec in aws["available_node_types"].items():
        if name == aws["head_node_type"]:
            commands = aws["setup_commands"] + aws["head_setup_commands"]
        elif "worker_setup_commands" in spec:  # a node type's own list replaces the global ones
            commands = spec["worker_setup_commands"]
        else:
            commands = aws["setup_commands"] + aws["worker_setup_commands"]
        assert installs_project(commands), f"node type {name} never installs {project_dir}"


def test_launcher_start_commands_are_valid_ray_start_invocations(aws):
    head = ray_start_invocations(aws["head_start_ray_commands"])
    workers = ray_start_invocations(aws["worker_start_ray_commands"])
    assert len(head) == 1 and len(workers) == 1
    head_params = parse_ray_start(head[0][1])
    worker_params = parse_ray_start(workers[0][1])
    assert head_params["head"] and not worker_params["head"]
    assert worker_params["address"] == f"$RAY_HEAD_IP:{head_params['port']}"


def test_launcher_keeps_token_auth_on_everywhere(aws):
    for env, _ in ray_start_invocations(aws["head_start_ray_commands"] + aws["worker_start_ray_commands"]):
        assert env.get("RAY_AUTH_MODE") == "token", "a node starts Ray without token authentication"
    # The token file of the machine running `ray up` is copied to the default token path on every node.
    assert aws["file_mounts"].get("/home/ray/.ray/auth_token") == "~/.ray/auth_token"
    assert "RAY_AUTH_MODE=disabled" not in AWS_CONFIG.read_text()


def test_launcher_gives_every_node_the_endpoint_token_from_a_file(aws):
    from raydetect.online.options import TOKEN_ENV

    (token_file,) = [remote for remote, local in aws["file_mounts"].items() if local == "~/.raydetect/api_token"]
    for env, _ in ray_start_invocations(aws["head_start_ray_commands"] + aws["worker_start_ray_commands"]):
        # Read from the copied file when Ray starts (workers inherit it): never written in the config.
        assert env.get(TOKEN_ENV) == f"$(cat {token_file})", env


def test_every_node_and_pod_limits_the_decode_workers_malloc_arenas(aws):
    from raydetect.offline.job import ARENA_VARIABLE, DECODE_MALLOC_ARENAS

    for env, _ in ray_start_invocations(aws["head_start_ray_commands"] + aws["worker_start_ray_commands"]):
        assert env.get(ARENA_VARIABLE) == str(DECODE_MALLOC_ARENAS), env
    assert re.search(rf"^ENV {ARENA_VARIABLE}={DECODE_MALLOC_ARENAS}$", DOCKERFILE.read_text(), re.MULTILINE)


def test_launcher_never_exposes_the_dashboard_or_job_api(aws):
    (head,) = ray_start_invocations(aws["head_start_ray_commands"])
    params = parse_ray_start(head[1])
    assert params["dashboard_host"] in ("127.0.0.1", "localhost"), params["dashboard_host"]
    for rule in aws["provider"].get("security_group", {}).get("IpPermissions", []):
        ports = set(range(rule.get("FromPort", 0), rule.get("ToPort", 65535) + 1))
        public = any(r.get("CidrIp") == "0.0.0.0/0" for r in rule.get("IpRanges", []))
        assert not (public and ports & CONTROL_PLANE_PORTS), f"security group opens {rule} to the world"


def test_iam_setup_creates_the_profiles_the_launcher_names(aws, s3_server):
    """cluster/aws_iam_setup.py against moto's IAM on 127.0.0.1 (the s3_server fixture serves every API)."""
    import importlib.util

    import boto3

    spec = importlib.util.spec_from_file_location("aws_iam_setup", CLUSTER / "aws_iam_setup.py")
    setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup)
    endpoint = s3_server["client_kwargs"]["endpoint_url"]
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-west-2")
    iam = session.client("iam", endpoint_url=endpoint)
    account = session.client("sts", endpoint_url=endpoint).get_caller_identity()["Account"]
    setup.setup_profiles(iam, account, "raydetect-test-bucket")
    setup.setup_profiles(iam, account, "raydetect-test-bucket")  # a second run keeps what exists

    named = {
        name: spec["node_config"]["IamInstanceProfile"]["Name"] for name, spec in aws["available_node_types"].items()
    }
    head_profile = named.pop(aws["head_node_type"])
    (worker_profile,) = set(named.values())  # one profile for every worker type
    assert (head_profile, worker_profile) == (setup.HEAD_PROFILE, setup.WORKER_PROFILE)
    for profile in (head_profile, worker_profile):
        roles = iam.get_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Roles"]
        assert [role["RoleName"] for role in roles] == [profile]

    def allowed(role: str, action: str) -> list[str]:
        """Resources on which the role's inline policies allow ``action`` (exact action names)."""
        resources = []
        for policy in iam.list_role_policies(RoleName=role)["PolicyNames"]:
            document = iam.get_role_policy(RoleName=role, PolicyName=policy)["PolicyDocument"]
            document = json.loads(document) if isinstance(document, str) else document
            for statement in document["Statement"]:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                if statement["Effect"] == "Allow" and action in actions:
                    found = statement["Resource"]
                    resources += found if isinstance(found, list) else [found]
        return resources

    # Workers: the bucket and nothing else.
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
        assert allowed(worker_profile, action) == ["arn:aws:s3:::raydetect-test-bucket/*"], action
    assert allowed(worker_profile, "s3:ListBucket") == ["arn:aws:s3:::raydetect-test-bucket"]
    assert not allowed(worker_profile, "ec2:RunInstances") and not allowed(worker_profile, "iam:PassRole")
    # Head: starts and ends workers, and may hand them the worker role only.
    assert allowed(head_profile, "ec2:RunInstances") == ["*"] and allowed(head_profile, "ec2:TerminateInstances")
    assert allowed(head_profile, "iam:PassRole") == [f"arn:aws:iam::{account}:role/{worker_profile}"]


# ------------------------------------------------------------------------------------------ KubeRay


def kuberay_cluster_spec(resource: dict) -> dict:
    key = {"RayJob": "rayClusterSpec", "RayService": "rayClusterConfig", "RayCluster": None}[resource["kind"]]
    return resource["spec"] if key is None else resource["spec"][key]


def pod_containers(template: dict) -> list[dict]:
    containers = template["spec"]["containers"]
    assert containers, "a pod template without containers"
    return containers


def all_pod_templates(cluster: dict) -> list[tuple[str, dict]]:
    groups = [("head", cluster["headGroupSpec"]["template"])]
    groups += [(group["groupName"], group["template"]) for group in cluster["workerGroupSpecs"]]
    return groups


@pytest.fixture(scope="module")
def rayjob() -> dict:
    (resource,) = load_yaml_documents(RAYJOB)
    return resource


@pytest.fixture(scope="module")
def rayservice_documents() -> list[dict]:
    return load_yaml_documents(RAYSERVICE)


@pytest.fixture(scope="module")
def rayservice(rayservice_documents) -> dict:
    services = [doc for doc in rayservice_documents if doc.get("kind") == "RayService"]
    assert len(services) == 1
    return services[0]


@pytest.fixture(scope="module", params=["rayjob", "rayservice"])
def kuberay_resource(request) -> dict:
    return request.getfixturevalue(request.param)


def test_kuberay_resource_has_the_fields_kuberay_requires(kuberay_resource):
    assert kuberay_resource["apiVersion"] == "ray.io/v1"
    assert kuberay_resource["kind"] in ("RayJob", "RayService")
    assert DNS_LABEL.match(kuberay_resource["metadata"]["name"])
    cluster = kuberay_cluster_spec(kuberay_resource)
    head = cluster["headGroupSpec"]
    assert isinstance(head.get("rayStartParams", {}), dict)
    for container in pod_containers(head["template"]):
        assert container["name"] and container["image"]
    assert cluster["workerGroupSpecs"], "no worker group"
    names = [group["groupName"] for group in cluster["workerGroupSpecs"]]
    assert len(set(names)) == len(names), "worker group names must be unique"
    for group in cluster["workerGroupSpecs"]:
        assert DNS_LABEL.match(group["groupName"]), group["groupName"]
        for field in ("replicas", "minReplicas", "maxReplicas"):
            assert isinstance(group[field], int) and group[field] >= 0, f"{group['groupName']}.{field}"
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert isinstance(group["rayStartParams"], dict)
        for container in pod_containers(group["template"]):
            assert container["name"] and container["image"]


def test_kuberay_ray_start_params_are_real_ray_start_flags(kuberay_resource):
    cluster = kuberay_cluster_spec(kuberay_resource)
    groups = [(True, cluster["headGroupSpec"])] + [(False, g) for g in cluster["workerGroupSpecs"]]
    for is_head, group in groups:
        params = group.get("rayStartParams", {})
        # The CRD types every value as a string: `num-cpus: 0` (an int) is rejected by the API server.
        assert all(isinstance(value, str) for value in params.values()), params
        parse_ray_start(kuberay_ray_start_argv(params, head=is_head))


def test_kuberay_cluster_pins_ray_and_the_project_image(kuberay_resource):
    cluster = kuberay_cluster_spec(kuberay_resource)
    assert cluster["rayVersion"] == pinned_ray_version()
    dockerfile = DOCKERFILE.read_text()
    base = re.search(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE).group(1)
    assert base == f"rayproject/ray:{pinned_ray_version()}-py{sys.version_info[0]}{sys.version_info[1]}-gpu"
    images = {container["image"] for _, template in all_pod_templates(cluster) for container in pod_containers(template)}
    assert images == {f"raydetect:{project_version()}"}, images


def test_kuberay_cluster_autoscales_gpu_workers(kuberay_resource):
    cluster = kuberay_cluster_spec(kuberay_resource)
    assert cluster["enableInTreeAutoscaling"] is True
    gpu_groups = [
        group
        for group in cluster["workerGroupSpecs"]
        if any(
            int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) >= 1
            for container in pod_containers(group["template"])
        )
    ]
    assert gpu_groups, "no worker group requests a GPU"
    for group in gpu_groups:
        assert group["minReplicas"] < group["maxReplicas"]
    head_params = cluster["headGroupSpec"].get("rayStartParams", {})
    assert head_params.get("num-cpus") == "0", "the head must schedule no work"


def test_kuberay_every_pod_mounts_shared_memory(kuberay_resource):
    for name, template in all_pod_templates(kuberay_cluster_spec(kuberay_resource)):
        volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
        for container in pod_containers(template):
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "/dev/shm" in mounts, f"{name}/{container['name']} has no /dev/shm volume"
            volume = volumes[mounts["/dev/shm"]]
            assert volume["emptyDir"]["medium"] == "Memory", f"{name}: /dev/shm is not memory-backed"


def test_kuberay_keeps_token_auth_on_and_the_dashboard_private(kuberay_resource):
    cluster = kuberay_cluster_spec(kuberay_resource)
    assert cluster["authOptions"]["mode"] == "token"
    head = cluster["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", "the head service must not be public"
    assert not head.get("enableIngress", False), "no ingress to the dashboard / job API"
    for _, template in all_pod_templates(cluster):
        for container in pod_containers(template):
            for env in container.get("env", []):
                assert not (env["name"] == "RAY_AUTH_MODE" and env.get("value") != "token"), env


def test_rayjob_entrypoint_runs_the_job_script_with_real_flags(rayjob):
    args = assert_job_entrypoint(rayjob["spec"]["entrypoint"])
    assert args.output.startswith("s3://"), "a cluster job writes to a bucket"
    assert getattr(args, "gpus_per_actor", 0), "the detector actors must ask for GPUs on this cluster"


def test_rayjob_working_dir_is_the_project_folder_of_the_image(rayjob):
    runtime_env = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    workdir = re.search(r"^WORKDIR\s+(\S+)", DOCKERFILE.read_text(), re.MULTILINE).group(1)
    assert runtime_env["working_dir"] == workdir
    assert re.search(r"^COPY\b.*\bjobs\b", DOCKERFILE.read_text(), re.MULTILINE), "the image lacks jobs/"
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True, "a finished job must release its GPUs"


def test_rayservice_serve_config_matches_cluster_serve_yaml(rayservice):
    from ray.serve.schema import ServeDeploySchema

    embedded = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    standalone = yaml.safe_load(SERVE_CONFIG.read_text())
    ServeDeploySchema.model_validate(embedded)
    assert embedded == standalone, "serveConfigV2 in cluster/kuberay/rayservice.yaml differs from cluster/serve.yaml"


def test_rayservice_names_the_real_serve_application_and_deployments(rayservice):
    import importlib

    from ray.serve import Application

    import raydetect.online.application

    for application in yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"]:
        assert application["import_path"] == "raydetect.serve:app"
        module_name, _, attribute = application["import_path"].partition(":")
        assert isinstance(getattr(importlib.import_module(module_name), attribute), Application)
        names = {deployment["name"] for deployment in application.get("deployments", [])}
        assert names <= {raydetect.online.application.INGRESS_NAME, raydetect.online.application.DETECTOR_NAME}, names


def test_rayservice_gpu_workers_fit_the_detector_replicas(rayservice):
    # A detector replica asking for more GPUs or CPUs than a GPU pod has would never be placed.
    cluster = kuberay_cluster_spec(rayservice)
    application = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"][0]
    import raydetect.online.application

    (detector,) = [d for d in application["deployments"] if d["name"] == raydetect.online.application.DETECTOR_NAME]
    wanted = detector["ray_actor_options"]
    pods = [
        container["resources"]["limits"]
        for group in cluster["workerGroupSpecs"]
        for container in pod_containers(group["template"])
    ]
    assert any(
        int(limits.get("nvidia.com/gpu", 0)) >= wanted.get("num_gpus", 0) and int(limits["cpu"]) >= wanted.get("num_cpus", 1)
        for limits in pods
    ), (wanted, pods)


def test_rayservice_api_token_comes_from_a_secret(rayservice):
    cluster = kuberay_cluster_spec(rayservice)
    for name, template in all_pod_templates(cluster):
        for container in pod_containers(template):
            env = {item["name"]: item for item in container.get("env", [])}
            token = env.get("RAYDETECT_API_TOKEN")
            assert token is not None, f"{name}/{container['name']} lacks RAYDETECT_API_TOKEN"
            assert "value" not in token, "the API token must not be written in the manifest"
            assert token["valueFrom"]["secretKeyRef"]["name"]


def test_rayservice_ingress_reaches_only_the_serve_port(rayservice_documents, rayservice):
    ingresses = [doc for doc in rayservice_documents if doc.get("kind") == "Ingress"]
    assert len(ingresses) == 1
    ingress = ingresses[0]
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    assert ingress["spec"].get("tls"), "the endpoint token must travel over TLS"
    serve_service = f"{rayservice['metadata']['name']}-serve-svc"  # the Service KubeRay creates for Serve
    embedded = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    serve_port = embedded.get("http_options", {}).get("port", 8000)
    backends = [
        path["backend"]["service"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert backends
    for backend in backends:
        assert backend["name"] == serve_service, backend
        assert backend["port"]["number"] == serve_port, backend
        assert backend["port"]["number"] not in CONTROL_PLANE_PORTS


# ------------------------------------------------------------------------------------------- docs


def documented_commands() -> list[str]:
    """Shell commands in docs/cluster.md code blocks, with backslash continuations joined."""
    text = CLUSTER_DOC.read_text()
    commands = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        commands += [line.strip().removeprefix("$ ") for line in joined.splitlines() if line.strip()]
    return commands


def test_documented_job_commands_use_real_flags():
    job_lines = [line for line in documented_commands() if "jobs/detect_videos.py" in line]
    assert job_lines, "docs/cluster.md shows no job submission"
    for line in job_lines:
        for argv in shell_commands(line):
            env, argv = split_env_prefix(argv)
            if "jobs/detect_videos.py" not in argv:
                continue
            if argv[:3] == ["ray", "job", "submit"]:
                assert "--working-dir" in argv, line
                argv = argv[argv.index("--") + 1 :]
            assert_job_entrypoint(shlex.join(argv))


def test_documented_files_exist():
    for line in documented_commands():
        for token in shlex.split(line, comments=True):
            if re.fullmatch(r"(cluster|jobs|docs|benchmarks)/[\w./-]+\.(ya?ml|py|md)", token):
                assert (REPO / token).is_file(), f"docs/cluster.md names {token}, which does not exist"
    # The configs' own comments point at files too.
    for config in [*CLUSTER.rglob("*.yaml"), DOCKERFILE, CLUSTER_DOC]:
        for named in re.findall(r"\b((?:cluster|jobs|docs|tests|raydetect)/[\w./-]*\w\.(?:ya?ml|py|md|sh))\b", config.read_text()):
            assert (REPO / named).is_file(), f"{config.relative_to(REPO)} names {named}, which does not exist"


# ----------------------------------------------------------------------------------------- image


def test_image_copies_only_paths_that_exist_and_installs_a_real_extra():
    dockerfile = DOCKERFILE.read_text()
    for line in re.findall(r"^COPY\s+(.+)$", dockerfile, re.MULTILINE):
        sources = [token for token in line.split()[:-1] if not token.startswith("--")]
        for source in sources:
            assert (REPO / source).exists(), f"cluster/Dockerfile copies {source}, which does not exist"
    extras = set(_pyproject()["project"]["optional-dependencies"])
    installed = re.findall(r"\[([\w,]+)\]", " ".join(re.findall(r"pip install[^\n]*", dockerfile)))
    installed += re.findall(r"raydetect\[([\w,]+)\]", AWS_CONFIG.read_text())
    assert installed, "neither the image nor the launcher installs the project with its s3 extra"
    for group in installed:
        assert set(group.split(",")) <= extras, f"pyproject.toml has no extra {group!r}"


def click_command(argv: list[str]):
    """The click command a documented `ray ...` / `serve ...` line runs, and the arguments left for it."""
    import click

    if argv[0] == "ray":
        from ray.scripts.scripts import cli
    elif argv[0] == "serve":
        from ray.serve.scripts import cli
    else:
        return None, []
    command, rest = cli, argv[1:]
    while isinstance(command, click.Group) and rest and rest[0] in command.commands:
        command, rest = command.commands[rest[0]], rest[1:]
    return command, rest


def test_documented_ray_and_serve_commands_use_real_options():
    checked = 0
    for line in documented_commands():
        for argv in shell_commands(line):
            _, argv = split_env_prefix(argv)
            if not argv or argv[0] not in ("ray", "serve"):
                continue
            command, rest = click_command(argv)
            assert command is not None and not hasattr(command, "commands"), f"no such command: {line}"
            options = {opt for param in command.params for opt in param.opts + param.secondary_opts}
            own = rest[: rest.index("--")] if "--" in rest else rest  # after `--` comes the job's entrypoint
            for token in own:
                if token.startswith("-"):
                    assert token.split("=", 1)[0] in options, f"`{' '.join(argv[:3])}` has no option {token}"
            checked += 1
    assert checked >= 8, "docs/cluster.md lost its ray / serve commands"
