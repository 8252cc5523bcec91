//! The deployment files agree with the service: docker-compose.yml parses,
//! runs what ops expect (two nodes, Postgres, Redis, a load balancer), and
//! sets only `RESERVOIR_*` variables the service actually reads; the
//! Dockerfile builds a small non-root image; the local cluster script is
//! valid shell.

use std::{collections::BTreeSet, path::Path, process::Command};

use clap::CommandFactory;
use reservoir::Config;
use yaml_rust2::{Yaml, YamlLoader};

fn file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn compose() -> Yaml {
    let mut docs = YamlLoader::load_from_str(&file("docker-compose.yml"))
        .expect("docker-compose.yml is valid YAML");
    assert_eq!(docs.len(), 1, "one YAML document");
    docs.remove(0)
}

/// Every environment variable the service reads, from its CLI definition.
fn settings() -> BTreeSet<String> {
    Config::command()
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .collect()
}

fn environment(service: &Yaml) -> BTreeSet<String> {
    service["environment"]
        .as_hash()
        .expect("environment is a map")
        .keys()
        .map(|k| k.as_str().expect("variable names are strings").to_owned())
        .collect()
}

#[test]
fn compose_runs_two_nodes_postgres_redis_and_a_load_balancer() {
    let compose = compose();
    let services = &compose["services"];
    for name in ["postgres", "redis", "node-a", "node-b", "lb"] {
        assert!(!services[name].is_badvalue(), "service {name} is missing");
    }
    assert!(
        !services["postgres"]["healthcheck"].is_badvalue(),
        "postgres has a health check"
    );
    assert!(
        services["postgres"]["volumes"][0]
            .as_str()
            .unwrap()
            .ends_with(":/var/lib/postgresql/data"),
        "postgres keeps its data in a volume"
    );
    let lb = &services["lb"];
    assert_eq!(lb["ports"][0].as_str(), Some("8080:8080"));
    let nginx_mount = lb["volumes"][0].as_str().unwrap();
    let nginx_conf = nginx_mount
        .split(':')
        .next()
        .unwrap()
        .trim_start_matches("./");
    let conf = file(nginx_conf);
    assert!(conf.contains("server node-a:8080") && conf.contains("server node-b:8080"));

    let mut volumes = BTreeSet::new();
    let mut node_ids = BTreeSet::new();
    for name in ["node-a", "node-b"] {
        let node = &services[name];
        assert_eq!(node["restart"].as_str(), Some("unless-stopped"), "{name}");
        let check = format!("{:?}", node["healthcheck"]["test"]);
        assert!(check.contains("/health"), "{name} health check: {check}");
        let volume = node["volumes"][0].as_str().unwrap().to_owned();
        assert!(
            volume.ends_with(":/data"),
            "{name} keeps its SQLite in a volume"
        );
        assert!(volumes.insert(volume), "{name} has its own data volume");
        let id = node["environment"]["RESERVOIR_NODE_ID"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(node_ids.insert(id), "{name} has its own node id");
    }
}

#[test]
fn compose_sets_only_variables_the_service_reads() {
    let compose = compose();
    let known = settings();
    for name in ["node-a", "node-b"] {
        let env = environment(&compose["services"][name]);
        for var in env.iter().filter(|v| v.starts_with("RESERVOIR_")) {
            assert!(
                known.contains(var),
                "{name} sets {var}, which the service does not read; it reads {known:?}"
            );
        }
        for needed in [
            "RESERVOIR_LISTEN",
            "RESERVOIR_DATA_DIR",
            "RESERVOIR_NODE_ID",
            "RESERVOIR_ADMIN_TOKEN",
            "RESERVOIR_POSTGRES_URL",
            "RESERVOIR_REDIS_URL",
        ] {
            assert!(env.contains(needed), "{name} does not set {needed}");
        }
    }
    // The settings the compose file relies on are the documented ones.
    let readme = file("README.md");
    for var in &known {
        assert!(
            readme.contains(var.as_str()),
            "README's configuration table lacks {var}"
        );
    }
}

#[test]
fn the_image_is_multi_stage_small_and_non_root() {
    let dockerfile = file("Dockerfile");
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert!(stages >= 2, "multi-stage build");
    assert!(
        dockerfile.contains("FROM debian:bookworm-slim"),
        "small runtime image"
    );
    let user = dockerfile
        .lines()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert_ne!(user.trim(), "USER root");
    assert!(dockerfile.contains("VOLUME [\"/data\"]"));
    assert!(dockerfile.contains("RESERVOIR_DATA_DIR=/data"));
}

#[test]
fn the_cluster_script_is_valid_shell() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh");
    let status = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .expect("run bash -n");
    assert!(status.success(), "scripts/cluster.sh has a syntax error");
    let usage = Command::new("bash")
        .arg(&script)
        .output()
        .expect("run the script without arguments");
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("up|down|status"));
}
