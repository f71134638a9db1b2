//! The production files under `deploy/` are checked against the code, not
//! just stored: the Kubernetes manifests against the dataflow's groups and
//! topics, the configuration parser, the CLI and the shutdown bound; the
//! Grafana dashboard and the Prometheus rules against the metrics that
//! `sinks::metrics` really defines; the rules with `promtool` when it is
//! installed (CI installs it: `.ci/run`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;
use topology::config::Config;
use topology::dataflow::{Dataflow, STAGES};

const RUNBOOK_URL: &str = "https://github.com/ticketflow/ticketflow/blob/main/docs/RUNBOOK.md#";
const SECRET_NAME: &str = "ticketflow";
/// Environment variables that hold secrets: never in the ConfigMap.
const SECRET_KEYS: [&str; 9] = [
    "TICKETFLOW_ADMIN_TOKEN",
    "TICKETFLOW_VIEWER_TOKEN",
    "LLM_API_KEY",
    "TICKETFLOW_MASTER_KEY",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "SCYLLA_USERNAME",
    "SCYLLA_PASSWORD",
    "SCYLLA_PASSWORD_FILE",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// Every YAML document of a file, as JSON values (empty documents dropped).
fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: invalid YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml_doc(rel: &str) -> Value {
    let mut docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "{rel} must hold exactly one YAML document");
    docs.remove(0)
}

fn s<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {v}"))
}

fn arr<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: expected a list, found {v}"))
}

/// A scalar as text (YAML may give `"1"` or `1`).
fn scalar(v: &Value, what: &str) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("{what}: expected a scalar, found {other}"),
    }
}

// ------------------------------------------------------------------ manifests

struct Manifests {
    /// (file, document)
    docs: Vec<(String, Value)>,
}

impl Manifests {
    fn load() -> Self {
        let kustomization = yaml_doc("deploy/kubernetes/kustomization.yaml");
        let mut docs = Vec::new();
        for r in arr(&kustomization["resources"], "kustomization resources") {
            let file = s(r, "resource").to_string();
            for d in yaml_docs(&format!("deploy/kubernetes/{file}")) {
                docs.push((file.clone(), d));
            }
        }
        Manifests { docs }
    }

    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.docs
            .iter()
            .filter(|(_, d)| d["kind"] == kind)
            .map(|(_, d)| d)
            .collect()
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.of_kind(kind)
            .into_iter()
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} named {name} in deploy/kubernetes"))
    }

    fn configmap(&self) -> BTreeMap<String, String> {
        let cm = self.get("ConfigMap", "ticketflow");
        cm["data"]
            .as_object()
            .expect("ConfigMap data")
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    s(v, &format!("ConfigMap value of {k} (quote numbers)")).to_string(),
                )
            })
            .collect()
    }

    /// The configuration a pod gets: the ConfigMap plus a stand-in for
    /// every secret it references, parsed by the real parser.
    fn config(&self) -> Config {
        let mut vars: HashMap<String, String> = self.configmap().into_iter().collect();
        for key in SECRET_KEYS {
            let v = if key == "TICKETFLOW_MASTER_KEY" {
                "00".repeat(32)
            } else {
                "stand-in".to_string()
            };
            vars.insert(key.to_string(), v);
        }
        vars.remove("SCYLLA_PASSWORD_FILE");
        Config::from_map(&vars).unwrap_or_else(|e| panic!("the ConfigMap is not a valid configuration: {e}"))
    }
}

/// The pods' components: ingest and the five stages.
fn components() -> Vec<&'static str> {
    std::iter::once("ingest").chain(STAGES).collect()
}

fn port_of(addr: &str) -> u16 {
    addr.parse::<std::net::SocketAddr>()
        .unwrap_or_else(|e| panic!("'{addr}' is not an address: {e}"))
        .port()
}

/// Parses a Kubernetes CPU quantity into cores.
fn cpu(q: &str) -> f64 {
    match q.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().expect("millicores") / 1000.0,
        None => q
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("'{q}' is not a CPU quantity")),
    }
}

/// Parses a Kubernetes memory quantity into bytes.
fn memory(q: &str) -> f64 {
    let units: [(&str, f64); 8] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0_f64.powi(4)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("'{q}' is not a memory quantity"))
                * factor;
        }
    }
    q.parse::<f64>()
        .unwrap_or_else(|_| panic!("'{q}' is not a memory quantity"))
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|sel| !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Checks what every Ticketflow container must have, Deployment or Job.
fn check_container(c: &Value, pod: &Value, what: &str) {
    assert_eq!(c["command"], serde_json::json!(["ticketflow"]), "{what}: command");
    assert!(!s(&c["image"], "image").is_empty(), "{what}: image");
    // Resources: requests and limits for CPU and memory, request <= limit.
    for res in ["cpu", "memory"] {
        let req = scalar(&c["resources"]["requests"][res], &format!("{what}: requests.{res}"));
        let lim = scalar(&c["resources"]["limits"][res], &format!("{what}: limits.{res}"));
        let (r, l) = if res == "cpu" {
            (cpu(&req), cpu(&lim))
        } else {
            (memory(&req), memory(&lim))
        };
        assert!(
            r > 0.0 && r <= l,
            "{what}: {res} request {req} must be above 0 and at most the limit {lim}"
        );
    }
    // Non-root, read-only root filesystem, no privilege escalation.
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true, "{what}: pod runAsNonRoot");
    assert!(
        psc["runAsUser"].as_u64().is_some_and(|u| u > 0),
        "{what}: pod runAsUser must not be root"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}: readOnlyRootFilesystem");
    assert_eq!(
        sc["allowPrivilegeEscalation"], false,
        "{what}: allowPrivilegeEscalation"
    );
    assert!(
        sc["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "ALL")),
        "{what}: capabilities must drop ALL"
    );
    // Every mount names a volume of the pod.
    let volumes: BTreeSet<&str> = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| s(&v["name"], "volume name"))
        .collect();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        assert!(
            volumes.contains(s(&m["name"], "mount")),
            "{what}: mount {} has no volume",
            m["name"]
        );
    }
    // The configuration comes from the ConfigMap, secrets from the Secret.
    assert!(
        c["envFrom"]
            .as_array()
            .is_some_and(|e| e.iter().any(|x| x["configMapRef"]["name"] == "ticketflow")),
        "{what}: envFrom the ConfigMap ticketflow"
    );
    for e in c["env"].as_array().into_iter().flatten() {
        let name = s(&e["name"], "env name");
        if SECRET_KEYS.contains(&name) {
            let r = &e["valueFrom"]["secretKeyRef"];
            assert_eq!(
                r["name"], SECRET_NAME,
                "{what}: {name} must come from the Secret {SECRET_NAME}"
            );
            assert_eq!(r["key"], name, "{what}: {name} must read the key of the same name");
            assert!(e.get("value").is_none(), "{what}: {name} must not hold a value");
        }
    }
}

/// Names of the secret keys a container reads, and whether each is optional.
fn secret_refs(c: &Value) -> BTreeMap<String, bool> {
    c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let r = e["valueFrom"].get("secretKeyRef")?;
            Some((s(&r["key"], "key").to_string(), r["optional"] == true))
        })
        .collect()
}

fn only_container<'a>(pod: &'a Value, what: &str) -> &'a Value {
    let cs = arr(&pod["containers"], &format!("{what}: containers"));
    assert_eq!(cs.len(), 1, "{what}: one container");
    &cs[0]
}

#[test]
fn kustomization_lists_every_file_and_each_object_once() {
    let kustomization = yaml_doc("deploy/kubernetes/kustomization.yaml");
    assert_eq!(kustomization["kind"], "Kustomization");
    assert!(
        kustomization.get("namespace").is_none(),
        "the base is namespace-agnostic: set the namespace in an overlay"
    );
    let listed: BTreeSet<String> = arr(&kustomization["resources"], "resources")
        .iter()
        .map(|r| s(r, "resource").to_string())
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| (n.ends_with(".yaml") || n.ends_with(".yml")) && n != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed, on_disk,
        "kustomization.yaml resources must list exactly the files beside it"
    );

    let m = Manifests::load();
    let mut seen = BTreeSet::new();
    for (file, d) in &m.docs {
        let kind = s(&d["kind"], &format!("{file}: kind"));
        assert!(d["apiVersion"].is_string(), "{file}: {kind} without apiVersion");
        let name = s(&d["metadata"]["name"], &format!("{file}: {kind} name"));
        assert!(
            d["metadata"].get("namespace").is_none(),
            "{file}: {kind} {name} names a namespace (the base must stay namespace-agnostic)"
        );
        assert!(
            seen.insert((kind.to_string(), name.to_string())),
            "{kind} {name} is defined twice"
        );
        assert!(
            d["kind"] != "Secret",
            "{file}: no Secret in the manifests (values never go into the repository)"
        );
    }
    for kind in [
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ScaledObject",
        "Job",
    ] {
        assert!(!m.of_kind(kind).is_empty(), "no {kind} in deploy/kubernetes");
    }
}

#[test]
fn configmap_is_a_valid_configuration_without_secrets() {
    let m = Manifests::load();
    let cm = m.configmap();
    for key in [
        "KAFKA_BROKERS",
        "SCYLLA_NODES",
        "TICKETFLOW_TOPIC_PREFIX",
        "LLM_BASE_URL",
        "LLM_MODEL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "RUST_LOG",
        "TICKETFLOW_HTTP_ADDR",
        "TICKETFLOW_OPS_ADDR",
    ] {
        assert!(cm.contains_key(key), "the ConfigMap lacks {key}");
    }
    assert_eq!(cm["TICKETFLOW_HTTP_ADDR"], "0.0.0.0:8080");
    assert_eq!(cm["TICKETFLOW_OPS_ADDR"], "0.0.0.0:8081");
    for key in SECRET_KEYS {
        assert!(
            !cm.contains_key(key),
            "{key} is a secret: reference the Secret, not the ConfigMap"
        );
    }
    let config = m.config();
    assert!(
        config.kafka_brokers.is_some(),
        "production runs on Kafka (KAFKA_BROKERS)"
    );
    assert!(config.scylla.is_some(), "production runs on ScyllaDB (SCYLLA_NODES)");
    assert!(
        config.http_addr.ip().is_unspecified(),
        "ingest must listen on every interface of the pod"
    );
    assert!(
        port_of(&cm["TICKETFLOW_OPS_ADDR"]) != config.http_addr.port(),
        "ops and HTTP ports differ"
    );
}

#[test]
fn deployments_run_each_stage_with_probes_resources_and_graceful_stop() {
    let m = Manifests::load();
    let cm = m.configmap();
    let config = m.config();
    let http_port = config.http_addr.port();
    let ops_port = port_of(&cm["TICKETFLOW_OPS_ADDR"]);
    // Running::stop: drain bound (drain timeout + 5 s), producer flush
    // (10 s), HTTP server (5 s).
    let stop_bound = config.drain_timeout.as_secs() + 5 + 10 + 5;

    let names: BTreeSet<String> = m
        .of_kind("Deployment")
        .iter()
        .map(|d| s(&d["metadata"]["name"], "name").to_string())
        .collect();
    let expected: BTreeSet<String> = components().iter().map(|c| format!("ticketflow-{c}")).collect();
    assert_eq!(names, expected, "one Deployment per stage group");

    for component in components() {
        let name = format!("ticketflow-{component}");
        let d = m.get("Deployment", &name);
        let what = format!("Deployment {name}");
        assert!(
            d["spec"].get("replicas").is_none(),
            "{what}: leave `replicas` to the autoscaler (kubectl apply would reset it)"
        );
        let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
        assert!(
            labels_match(&d["spec"]["selector"]["matchLabels"], pod_labels),
            "{what}: the selector must match the pod labels"
        );
        let pod = &d["spec"]["template"]["spec"];
        let c = only_container(pod, &what);
        check_container(c, pod, &what);
        assert_eq!(
            c["args"],
            serde_json::json!(["run", "--stages", component]),
            "{what}: runs its own stage group"
        );

        // Probes: liveness /health, readiness /health/ready, a startup
        // probe, all on a declared port, the one the process listens on.
        let ports: Vec<(Option<&str>, u64)> = arr(&c["ports"], &format!("{what}: ports"))
            .iter()
            .map(|p| (p["name"].as_str(), p["containerPort"].as_u64().expect("containerPort")))
            .collect();
        let resolve = |port: &Value| -> u64 {
            match port {
                Value::Number(n) => {
                    let n = n.as_u64().expect("port number");
                    assert!(
                        ports.iter().any(|(_, p)| *p == n),
                        "{what}: probe port {n} is not declared"
                    );
                    n
                }
                Value::String(name) => {
                    ports
                        .iter()
                        .find(|(n, _)| *n == Some(name.as_str()))
                        .unwrap_or_else(|| panic!("{what}: probe port '{name}' is not declared"))
                        .1
                }
                other => panic!("{what}: probe port {other}"),
            }
        };
        let listen = if component == "ingest" { http_port } else { ops_port };
        for (probe, path) in [
            ("livenessProbe", "/health"),
            ("readinessProbe", "/health/ready"),
            ("startupProbe", "/health"),
        ] {
            let get = &c[probe]["httpGet"];
            assert_eq!(get["path"], path, "{what}: {probe} path");
            assert_eq!(
                resolve(&get["port"]),
                u64::from(listen),
                "{what}: {probe} must hit the port the process listens on"
            );
        }
        // Prometheus scrapes /metrics on that port.
        let ann = &d["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(ann["prometheus.io/scrape"], "true", "{what}: scrape annotation");
        assert_eq!(ann["prometheus.io/path"], "/metrics", "{what}: metrics path");
        assert_eq!(
            ann["prometheus.io/port"],
            listen.to_string(),
            "{what}: metrics port must be the one the process serves"
        );

        let grace = pod["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or_else(|| panic!("{what}: terminationGracePeriodSeconds"));
        assert!(
            grace >= stop_bound,
            "{what}: terminationGracePeriodSeconds {grace} s is shorter than the graceful stop ({stop_bound} s)"
        );

        // Least privilege: every process gets the master key and the Kafka
        // credentials, only synthesize the LLM key.
        let refs = secret_refs(c);
        for key in ["TICKETFLOW_MASTER_KEY", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"] {
            assert!(refs.contains_key(key), "{what}: needs {key}");
        }
        assert_eq!(
            refs.contains_key("LLM_API_KEY"),
            component == "synthesize",
            "{what}: only synthesize calls the LLM"
        );
    }
    // Ingest is reachable through a Service on its HTTP port.
    let svc = m.get("Service", "ticketflow-ingest");
    let ingest = m.get("Deployment", "ticketflow-ingest");
    assert!(labels_match(
        &svc["spec"]["selector"],
        &ingest["spec"]["template"]["metadata"]["labels"]
    ));
    assert!(
        arr(&svc["spec"]["ports"], "Service ports")
            .iter()
            .any(|p| p["targetPort"] == "http" || p["targetPort"] == http_port),
        "the Service must forward to ingest's HTTP port"
    );
}

/// minReplicas of the autoscaler (HPA or ScaledObject) of a Deployment.
fn min_replicas(m: &Manifests, deployment: &str) -> u64 {
    let mut found = Vec::new();
    for hpa in m.of_kind("HorizontalPodAutoscaler") {
        if hpa["spec"]["scaleTargetRef"]["name"] == deployment {
            found.push(hpa["spec"]["minReplicas"].as_u64().unwrap_or(1));
        }
    }
    for so in m.of_kind("ScaledObject") {
        if so["spec"]["scaleTargetRef"]["name"] == deployment {
            found.push(so["spec"]["minReplicaCount"].as_u64().unwrap_or(0));
        }
    }
    assert_eq!(
        found.len(),
        1,
        "{deployment}: exactly one autoscaler (HPA or ScaledObject)"
    );
    found[0]
}

#[test]
fn every_deployment_has_one_disruption_budget_that_allows_evictions() {
    let m = Manifests::load();
    for d in m.of_kind("Deployment") {
        let name = s(&d["metadata"]["name"], "name");
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        let pdbs: Vec<&Value> = m
            .of_kind("PodDisruptionBudget")
            .into_iter()
            .filter(|p| labels_match(&p["spec"]["selector"]["matchLabels"], labels))
            .collect();
        assert_eq!(
            pdbs.len(),
            1,
            "{name}: exactly one PodDisruptionBudget selects its pods"
        );
        let spec = &pdbs[0]["spec"];
        // It must not select another Deployment's pods.
        for other in m.of_kind("Deployment") {
            if other["metadata"]["name"] != name {
                assert!(
                    !labels_match(
                        &spec["selector"]["matchLabels"],
                        &other["spec"]["template"]["metadata"]["labels"]
                    ),
                    "the PDB of {name} also selects {}",
                    other["metadata"]["name"]
                );
            }
        }
        // A node drain must be able to proceed.
        let min = min_replicas(&m, name);
        match (spec.get("minAvailable"), spec.get("maxUnavailable")) {
            (Some(Value::Number(n)), None) => assert!(
                n.as_u64().is_some_and(|n| n < min),
                "{name}: minAvailable {n} would block every eviction at {min} replicas"
            ),
            (None, Some(Value::Number(n))) => {
                assert!(
                    n.as_u64().is_some_and(|n| n >= 1),
                    "{name}: maxUnavailable must be at least 1"
                )
            }
            (a, b) => panic!("{name}: the PDB needs a number in minAvailable or maxUnavailable, found {a:?} {b:?}"),
        }
    }
}

#[test]
fn each_stage_scales_on_the_lag_of_its_own_group_and_input_topic() {
    let m = Manifests::load();
    let cm = m.configmap();
    let config = m.config();
    let flow = Dataflow::new(&config.topic_prefix, config.partitions, config.retry_tiers.clone());
    let partitions = u64::try_from(config.partitions).expect("partitions");
    // KEDA's names of librdkafka's SASL mechanisms.
    let mechanism = cm
        .get("KAFKA_SASL_MECHANISM")
        .map(|m| match m.to_ascii_uppercase().as_str() {
            "PLAIN" => "plaintext",
            "SCRAM-SHA-256" => "scram_sha256",
            "SCRAM-SHA-512" => "scram_sha512",
            other => panic!("KAFKA_SASL_MECHANISM {other} has no KEDA equivalent"),
        });
    let protocol = cm.get("KAFKA_SECURITY_PROTOCOL").cloned().unwrap_or_default();

    let mut targets = BTreeSet::new();
    for so in m.of_kind("ScaledObject") {
        assert_eq!(so["apiVersion"], "keda.sh/v1alpha1");
        let target = s(&so["spec"]["scaleTargetRef"]["name"], "scaleTargetRef").to_string();
        assert!(targets.insert(target.clone()), "two ScaledObjects scale {target}");
        m.get("Deployment", &target);
    }
    for stage in STAGES {
        let name = format!("ticketflow-{stage}");
        let so = m.get("ScaledObject", &name);
        let spec = &so["spec"];
        assert_eq!(
            spec["scaleTargetRef"]["name"],
            name.as_str(),
            "{name}: scales its Deployment"
        );
        let min = spec["minReplicaCount"].as_u64().expect("minReplicaCount");
        let max = spec["maxReplicaCount"].as_u64().expect("maxReplicaCount");
        assert!(
            min >= 1,
            "{name}: keep one consumer (a group without members reads STOP and alerts)"
        );
        assert!(
            min <= max && max <= partitions,
            "{name}: {min} <= maxReplicaCount {max} <= partitions {partitions} (more consumers than partitions idle)"
        );
        let triggers = arr(&spec["triggers"], "triggers");
        assert_eq!(triggers.len(), 1, "{name}: one trigger");
        let t = &triggers[0];
        assert_eq!(t["type"], "kafka", "{name}: KEDA's Kafka scaler");
        let md = &t["metadata"];
        assert_eq!(
            md["consumerGroup"],
            flow.group(stage).as_str(),
            "{name}: consumer group"
        );
        assert_eq!(md["topic"], flow.input_of(stage).as_str(), "{name}: input topic");
        assert_eq!(
            md["bootstrapServers"],
            cm["KAFKA_BROKERS"].as_str(),
            "{name}: the scaler must read the cluster the stages use (KAFKA_BROKERS)"
        );
        // Records a pod is working on are not committed yet and count as
        // lag: a threshold below the in-flight bound scales on work that is
        // already being done.
        let threshold: u64 = scalar(&md["lagThreshold"], "lagThreshold")
            .parse()
            .expect("lagThreshold");
        let in_flight = config.max_in_flight.get(stage).copied().expect("in-flight bound") as u64;
        assert!(
            threshold >= in_flight,
            "{name}: lagThreshold {threshold} is below the stage's in-flight bound {in_flight}"
        );
        // Authentication as the stages do it.
        match &mechanism {
            Some(mech) => {
                assert_eq!(md["sasl"], *mech, "{name}: sasl must match KAFKA_SASL_MECHANISM");
                let auth = s(&t["authenticationRef"]["name"], "authenticationRef");
                let ta = m.get("TriggerAuthentication", auth);
                let params: BTreeSet<&str> = arr(&ta["spec"]["secretTargetRef"], "secretTargetRef")
                    .iter()
                    .inspect(|r| assert_eq!(r["name"], SECRET_NAME, "{auth}: reads the Secret {SECRET_NAME}"))
                    .map(|r| s(&r["parameter"], "parameter"))
                    .collect();
                assert!(
                    params.contains("username") && params.contains("password"),
                    "{auth}: SASL user"
                );
            }
            None => assert!(md.get("sasl").is_none(), "{name}: sasl without KAFKA_SASL_MECHANISM"),
        }
        let tls = protocol == "SSL" || protocol == "SASL_SSL";
        assert_eq!(
            md.get("tls") == Some(&Value::from("enable")),
            tls,
            "{name}: tls as KAFKA_SECURITY_PROTOCOL"
        );
    }
    // Ingest scales on CPU.
    let hpa = m
        .of_kind("HorizontalPodAutoscaler")
        .into_iter()
        .find(|h| h["spec"]["scaleTargetRef"]["name"] == "ticketflow-ingest")
        .expect("an HPA for ticketflow-ingest");
    assert!(
        arr(&hpa["spec"]["metrics"], "metrics")
            .iter()
            .any(|x| x["type"] == "Resource" && x["resource"]["name"] == "cpu"),
        "ingest scales on CPU"
    );
    assert!(
        hpa["spec"]["minReplicas"].as_u64().is_some_and(|n| n >= 2),
        "two ingest pods at least"
    );
}

#[test]
fn jobs_migrate_and_create_topics() {
    let m = Manifests::load();
    for (name, args) in [
        ("ticketflow-migrate", vec!["migrate"]),
        ("ticketflow-topics-create", vec!["topics", "create"]),
    ] {
        let job = m.get("Job", name);
        let pod = &job["spec"]["template"]["spec"];
        let c = only_container(pod, name);
        check_container(c, pod, name);
        assert_eq!(c["args"], serde_json::json!(args), "{name}: args");
        assert!(
            pod["restartPolicy"] == "OnFailure" || pod["restartPolicy"] == "Never",
            "{name}: restartPolicy"
        );
    }
}

#[test]
fn every_command_line_is_accepted_by_the_binary() {
    let m = Manifests::load();
    let mut pods: Vec<(String, &Value)> = Vec::new();
    for kind in ["Deployment", "Job"] {
        for d in m.of_kind(kind) {
            pods.push((
                format!("{kind} {}", d["metadata"]["name"]),
                &d["spec"]["template"]["spec"],
            ));
        }
    }
    let known: BTreeSet<&str> = components().into_iter().collect();
    for (what, pod) in pods {
        for c in arr(&pod["containers"], "containers") {
            let args: Vec<String> = arr(&c["args"], "args")
                .iter()
                .map(|a| s(a, "arg").to_string())
                .collect();
            if let Some(i) = args.iter().position(|a| a == "--stages") {
                for stage in args[i + 1].split(',') {
                    assert!(known.contains(stage), "{what}: unknown stage '{stage}'");
                }
            }
            // clap parses every argument and flag before it answers --help:
            // an unknown subcommand or flag exits 2.
            let out = Command::new(env!("CARGO_BIN_EXE_ticketflow"))
                .args(&args)
                .arg("--help")
                .output()
                .expect("run ticketflow");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{what}: `ticketflow {}` is refused: {}{}",
                args.join(" "),
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
            let usage = format!(
                "Usage: ticketflow {}",
                args.iter()
                    .take_while(|a| !a.starts_with('-'))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            assert!(stdout.contains(&usage), "{what}: expected '{usage}' in:\n{stdout}");
        }
    }
}

// -------------------------------------------------------------------- metrics

/// Every series name a query may select: the `ticketflow_*` metrics defined
/// in sinks/src/metrics.rs (histograms as `_bucket`, `_sum`, `_count`), the
/// families `sinks::metrics::metrics().render()` exports (the `process_*`
/// collector), and Prometheus' own `up`.
fn known_series() -> BTreeSet<String> {
    let src = read("sinks/src/metrics.rs");
    let mut known = BTreeSet::new();
    let mut histograms = BTreeSet::new();
    let mut rest = src.as_str();
    let mut offset = 0;
    while let Some(i) = rest.find("\"ticketflow_") {
        let start = offset + i + 1;
        let end = start + src[start..].find('"').expect("closing quote");
        let name = &src[start..end];
        // The constructor this literal is an argument of: the nearest call
        // before it (`histogram(&r, "..."` or `HistogramOpts::new("..."`).
        let before = &src[..start];
        let nearest = [
            "histogram",
            "HistogramOpts::new",
            "counter",
            "gauge",
            "float_gauge",
            "Opts::new",
        ]
        .iter()
        .filter_map(|call| last_call(before, call).map(|at| (at, *call)))
        .max()
        .map(|(_, call)| call)
        .expect("a constructor before the name");
        let is_histogram = matches!(nearest, "histogram" | "HistogramOpts::new");
        if is_histogram {
            histograms.insert(name.to_string());
            for suffix in ["_bucket", "_sum", "_count"] {
                known.insert(format!("{name}{suffix}"));
            }
        } else {
            known.insert(name.to_string());
        }
        offset = end + 1;
        rest = &src[offset..];
    }
    // The parse found what ARCHITECTURE section 8 names.
    for name in [
        "ticketflow_webhooks_received_total",
        "ticketflow_stage_records_total",
        "ticketflow_consumer_lag",
        "ticketflow_consumer_lag_seconds",
        "ticketflow_circuit_breaker_state",
        "ticketflow_enhancements_total",
        "ticketflow_dlq_records_total",
    ] {
        assert!(known.contains(name), "{name} not found in sinks/src/metrics.rs");
    }
    for name in [
        "ticketflow_webhook_request_duration_seconds",
        "ticketflow_stage_duration_seconds",
        "ticketflow_external_request_duration_seconds",
    ] {
        assert!(histograms.contains(name), "{name} should parse as a histogram");
    }
    // What the registry exports by itself (# TYPE lines).
    let text = sinks::metrics::metrics().render();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().expect("name"), it.next().expect("type"));
            if matches!(kind, "histogram" | "summary") {
                for suffix in ["_bucket", "_sum", "_count"] {
                    known.insert(format!("{name}{suffix}"));
                }
            } else {
                known.insert(name.to_string());
            }
        }
    }
    known.insert("up".to_string());
    known
}

/// Where the last call `name(` starts in `text`, `name` being a whole word
/// (so `Opts::new(` is not found inside `HistogramOpts::new(`).
fn last_call(text: &str, name: &str) -> Option<usize> {
    let pattern = format!("{name}(");
    text.match_indices(&pattern)
        .map(|(at, _)| at)
        .filter(|&at| {
            !text[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .last()
}

/// Every name must be known; on platforms without the process collector
/// `process_*` cannot be checked against render() and is let through.
fn check_names(names: &[String], known: &BTreeSet<String>, what: &str) {
    for n in names {
        let ok = known.contains(n) || (!cfg!(target_os = "linux") && n.starts_with("process_"));
        assert!(ok, "{what}: `{n}` is not a metric Ticketflow exports");
    }
}

fn skip_until(b: &[char], mut i: usize, close: char) -> usize {
    i += 1;
    while i < b.len() && b[i] != close {
        if matches!(b[i], '"' | '\'' | '`') {
            i = skip_string(b, i);
        } else {
            i += 1;
        }
    }
    i + 1
}

fn skip_string(b: &[char], mut i: usize) -> usize {
    let quote = b[i];
    i += 1;
    while i < b.len() && b[i] != quote {
        if b[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The metric names a PromQL expression selects. A small lexer, enough for
/// the expressions under deploy/: strings, label matchers, range selectors,
/// grouping clauses, functions, aggregations, keywords, numbers, durations
/// and Grafana variables are skipped; every other identifier is a metric.
fn metric_names(expr: &str) -> Vec<String> {
    const GROUPING: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    const WORDS: [&str; 20] = [
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        "inf",
        "nan",
        "atan2",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let b: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&b, i);
        } else if c == '{' {
            i = skip_until(&b, i, '}');
        } else if c == '[' {
            i = skip_until(&b, i, ']');
        } else if c == '$' {
            i += 1;
            if b.get(i) == Some(&'{') {
                i = skip_until(&b, i, '}');
            } else {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || (c == '.' && b.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_' || b[i] == ':') {
                i += 1;
            }
            let word: String = b[start..i].iter().collect();
            let mut j = i;
            while j < b.len() && b[j].is_whitespace() {
                j += 1;
            }
            let next = b.get(j).copied();
            if GROUPING.contains(&word.as_str()) {
                if next == Some('(') {
                    i = skip_until(&b, j, ')');
                }
            } else if next != Some('(') && !WORDS.contains(&word.to_ascii_lowercase().as_str()) {
                out.push(word);
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn the_promql_lexer_finds_metric_names() {
    let names = metric_names(
        r#"sum by (group) (max by (group, topic, partition) (ticketflow_consumer_lag{group=~"$group", x="a}b"}))
           and on (group) max(rate(foo_total[$__rate_interval] offset 1h)) > 0.95 or vector(0)
           / histogram_quantile(0.95, sum(rate(h_bucket{le!="+Inf"}[5m])) by (le)) * ${x} + 1e3"#,
    );
    assert_eq!(names, ["ticketflow_consumer_lag", "foo_total", "h_bucket"]);
}

fn dashboard_exprs(panels: &[Value], out: &mut Vec<(String, String)>) {
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default().to_string();
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push((title.clone(), e.to_string()));
            }
        }
        if let Some(inner) = p["panels"].as_array() {
            dashboard_exprs(inner, out);
        }
    }
}

fn all_panels(panels: &[Value], out: &mut Vec<Value>) {
    for p in panels {
        out.push(p.clone());
        if let Some(inner) = p["panels"].as_array() {
            all_panels(inner, out);
        }
    }
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/ticketflow.json")).expect("deploy/grafana/ticketflow.json is JSON")
}

#[test]
fn grafana_dashboard_queries_only_exported_metrics() {
    let d = dashboard();
    let known = known_series();
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion >= 36"
    );
    assert!(d["uid"].is_string() && d["title"].is_string());

    // Data source and filters are template variables.
    let vars = arr(&d["templating"]["list"], "templating");
    let var = |name: &str| vars.iter().find(|v| v["name"] == name);
    let ds = var("DS_PROMETHEUS").expect("a DS_PROMETHEUS variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    for name in ["tenant", "group"] {
        let v = var(name).unwrap_or_else(|| panic!("a `{name}` variable"));
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .expect("variable query");
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|x| x.strip_suffix(')'))
            .unwrap_or_else(|| panic!("${name}: label_values(metric, label), found {q}"));
        let (metric, label) = inner.split_once(',').expect("label_values(metric, label)");
        assert_eq!(label.trim(), name);
        check_names(&metric_names(metric), &known, &format!("variable ${name}"));
    }
    let defined: BTreeSet<String> = vars
        .iter()
        .map(|v| s(&v["name"], "variable name").to_string())
        .collect();

    let mut panels = Vec::new();
    all_panels(arr(&d["panels"], "panels"), &mut panels);
    let mut ids = BTreeSet::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "panel id {} twice",
            p["id"]
        );
        let pos = &p["gridPos"];
        let (x, w) = (pos["x"].as_u64().expect("x"), pos["w"].as_u64().expect("w"));
        assert!(x + w <= 24, "{title}: wider than the grid");
        if p["type"] != "row" {
            assert_eq!(
                p["datasource"]["uid"], "${DS_PROMETHEUS}",
                "{title}: data source variable"
            );
            for t in p["targets"].as_array().into_iter().flatten() {
                assert_eq!(
                    t["datasource"]["uid"], "${DS_PROMETHEUS}",
                    "{title}: target data source"
                );
            }
        }
    }

    let mut exprs = Vec::new();
    dashboard_exprs(arr(&d["panels"], "panels"), &mut exprs);
    let mut used = BTreeSet::new();
    for (title, e) in &exprs {
        let names = metric_names(e);
        assert!(!names.is_empty(), "{title}: selects no metric: {e}");
        check_names(&names, &known, &format!("panel '{title}'"));
        used.extend(names);
        // Every $variable is a Grafana built-in or defined.
        for (i, _) in e.match_indices('$') {
            let rest = e[i + 1..].trim_start_matches('{');
            let var: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                var.starts_with("__") || defined.contains(&var),
                "{title}: ${var} is not a dashboard variable"
            );
        }
    }
    // What the operations and baseline rows must show.
    for name in [
        "ticketflow_webhooks_received_total",
        "ticketflow_webhook_request_duration_seconds_bucket",
        "ticketflow_consumer_lag",
        "ticketflow_consumer_group_status",
        "ticketflow_consumer_lag_drain_seconds",
        "ticketflow_stage_records_total",
        "ticketflow_retries_total",
        "ticketflow_dlq_depth",
        "ticketflow_circuit_breaker_state",
        "ticketflow_end_to_end_duration_seconds_bucket",
        "ticketflow_enhancements_total",
        "ticketflow_feedback_total",
        "ticketflow_tenant_backlog",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(used.contains(name), "the dashboard shows no panel of {name}");
    }
}

// ------------------------------------------------------------------ alerting

fn alert_rules() -> Vec<Value> {
    let file = yaml_doc("deploy/prometheus/alerts.yml");
    let mut rules = Vec::new();
    for g in arr(&file["groups"], "groups") {
        for r in arr(&g["rules"], "rules") {
            rules.push(r.clone());
        }
    }
    rules
}

fn anchor_of(rule: &Value) -> String {
    let name = s(&rule["alert"], "alert");
    let url = s(&rule["annotations"]["runbook_url"], &format!("{name}: runbook_url"));
    let anchor = url
        .strip_prefix(RUNBOOK_URL)
        .unwrap_or_else(|| panic!("{name}: runbook_url must start with {RUNBOOK_URL}"));
    assert!(
        !anchor.is_empty()
            && anchor
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
        "{name}: '{anchor}' is not a GitHub heading anchor"
    );
    anchor.to_string()
}

#[test]
fn alert_rules_are_labelled_linked_and_use_exported_metrics() {
    let known = known_series();
    let rules = alert_rules();
    let mut names = BTreeSet::new();
    let mut used = BTreeSet::new();
    for r in &rules {
        let expr = s(&r["expr"], "expr");
        let what = r["alert"]
            .as_str()
            .or(r["record"].as_str())
            .expect("alert or record")
            .to_string();
        let metrics = metric_names(expr);
        check_names(&metrics, &known, &what);
        // Several processes export the same lag gauge: de-duplicate first.
        if metrics.iter().any(|m| m == "ticketflow_consumer_lag") {
            assert!(
                expr.contains("max by (group, topic, partition) (ticketflow_consumer_lag"),
                "{what}: take `max by (group, topic, partition)` of ticketflow_consumer_lag before summing"
            );
        }
        used.extend(metrics);
        if r.get("alert").is_none() {
            continue;
        }
        assert!(names.insert(what.clone()), "alert {what} defined twice");
        assert!(
            matches!(r["labels"]["severity"].as_str(), Some("critical" | "warning" | "info")),
            "{what}: severity label critical, warning or info"
        );
        assert!(r["annotations"]["summary"].is_string(), "{what}: summary");
        anchor_of(r);
    }
    for name in [
        "ticketflow_consumer_lag",
        "ticketflow_consumer_group_status",
        "ticketflow_enhancements_total",
        "ticketflow_webhook_request_duration_seconds_bucket",
        "ticketflow_dlq_records_total",
        "ticketflow_dlq_depth",
        "ticketflow_circuit_breaker_state",
        "ticketflow_stage_ready",
        "up",
        "ticketflow_end_to_end_duration_seconds_bucket",
    ] {
        assert!(used.contains(name), "no alert watches {name}");
    }

    // The example scrape configuration gives the job name the rules select.
    let prom = yaml_doc("deploy/prometheus/prometheus.yml");
    assert!(arr(&prom["rule_files"], "rule_files").iter().any(|f| f == "alerts.yml"));
    assert!(
        arr(&prom["scrape_configs"], "scrape_configs")
            .iter()
            .any(|c| c["job_name"] == "ticketflow"),
        "a scrape job named ticketflow (the rules select job=\"ticketflow\")"
    );
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_unit_test() {
    let known = known_series();
    let alerts: BTreeSet<String> = alert_rules()
        .iter()
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect();
    let tests = yaml_doc("deploy/prometheus/alerts.test.yml");
    assert!(arr(&tests["rule_files"], "rule_files")
        .iter()
        .any(|f| f == "alerts.yml"));
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for t in arr(&tests["tests"], "tests") {
        for series in t["input_series"].as_array().into_iter().flatten() {
            let sel = s(&series["series"], "series");
            check_names(&metric_names(sel), &known, &format!("test '{}'", t["name"]));
        }
        for case in t["alert_rule_test"].as_array().into_iter().flatten() {
            let name = s(&case["alertname"], "alertname").to_string();
            assert!(alerts.contains(&name), "test of unknown alert {name}");
            if case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()) {
                firing.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    let no_firing: Vec<&String> = alerts.iter().filter(|a| !firing.contains(*a)).collect();
    let no_quiet: Vec<&String> = alerts.iter().filter(|a| !quiet.contains(*a)).collect();
    assert!(
        no_firing.is_empty() && no_quiet.is_empty(),
        "alerts.test.yml: no case where it fires: {no_firing:?}; no case where it stays quiet: {no_quiet:?}"
    );
}

/// GitHub's anchor of a Markdown heading.
fn github_slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn github_slugs_are_computed_like_github() {
    assert_eq!(
        github_slug(" 4.3 Backlog / enhancements delayed (high \"queue depth\")"),
        "43-backlog--enhancements-delayed-high-queue-depth"
    );
    assert_eq!(github_slug(" Backlog too large"), "backlog-too-large");
}

/// Every alert's runbook_url points at a heading (GitHub's anchor of it) or
/// an explicit `<a id="...">` / `<a name="...">` of docs/RUNBOOK.md.
#[test]
fn runbook_has_every_alert_anchor() {
    let runbook = read("docs/RUNBOOK.md");
    let mut anchors = BTreeSet::new();
    let mut in_code = false;
    for line in runbook.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        if line.starts_with('#') {
            anchors.insert(github_slug(line.trim_start_matches('#')));
        }
        for attr in ["id=\"", "name=\""] {
            for (i, _) in line.match_indices(&format!("<a {attr}")) {
                let rest = &line[i + 3 + attr.len()..];
                if let Some(end) = rest.find('"') {
                    anchors.insert(rest[..end].to_string());
                }
            }
        }
    }
    let missing: BTreeSet<String> = alert_rules()
        .iter()
        .filter(|r| r.get("alert").is_some())
        .map(anchor_of)
        .filter(|a| !anchors.contains(a))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/RUNBOOK.md lacks the anchors the alerts link to: {missing:?}"
    );
}

// ------------------------------------------------------------------ promtool

fn promtool() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
}

fn run_promtool(promtool: &Path, args: &[&str]) {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(root())
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_checks_and_tests_the_rules_and_the_dashboard_queries() {
    let Some(promtool) = promtool() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is not on PATH (CI installs Debian's `prometheus` package: .ci/run)"
        );
        eprintln!(
            "SKIPPED: promtool is not on PATH, so deploy/prometheus is not run through it \
             (apt-get install prometheus); the other deploy_files tests still ran"
        );
        return;
    };
    run_promtool(&promtool, &["check", "rules", "deploy/prometheus/alerts.yml"]);
    run_promtool(&promtool, &["test", "rules", "deploy/prometheus/alerts.test.yml"]);

    // The dashboard's queries, with Grafana's variables filled in, as
    // recording rules: promtool parses every one.
    let mut exprs = Vec::new();
    dashboard_exprs(arr(&dashboard()["panels"], "panels"), &mut exprs);
    let mut rules = Vec::new();
    for (i, (_, e)) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "5m")
            .replace("$__interval", "1m")
            .replace("$__range", "6h")
            .replace("$tenant", ".*")
            .replace("$group", ".*");
        rules.push(serde_json::json!({"record": format!("grafana:panel_query_{i}"), "expr": e}));
    }
    let file = serde_json::json!({"groups": [{"name": "grafana", "rules": rules}]});
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dashboard_queries.yml");
    std::fs::write(&path, serde_norway::to_string(&file).expect("YAML")).expect("write rules");
    run_promtool(&promtool, &["check", "rules", path.to_str().expect("utf-8 path")]);
}
