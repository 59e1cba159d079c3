//! The documentation as tests (issue 23): the guide builds with mdBook and no relative link or
//! anchor in it (or in the README) is broken; every configuration block in them is one the node
//! accepts; and the README's five-minute tour runs, command by command, against a real node and
//! a real Orthanc, so a newcomer following it gets what it says.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use radstream::configuration::{ConfigError, Settings};

use crate::helpers::{free_port, radstream_bin, radstream_cache};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `RADSTREAM_MDBOOK`, else the copy `scripts/setup.sh` builds into the cache, else `mdbook`.
fn mdbook() -> PathBuf {
    if let Some(p) = std::env::var_os("RADSTREAM_MDBOOK") {
        return PathBuf::from(p);
    }
    Some(radstream_cache().join("tools/bin/mdbook"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("mdbook"))
}

/// A fenced code block: the line it starts on, its info string, its text.
struct Block {
    line: usize,
    info: String,
    text: String,
}

/// The fenced code blocks of a Markdown text (also indented ones, in lists).
fn fenced_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    // The open block: its fence's indentation and characters.
    let mut open: Option<(usize, String, Block)> = None;
    for (n, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let fence: String = trimmed
            .chars()
            .take_while(|c| *c == '`' || *c == '~')
            .collect();
        match open.as_mut() {
            None if fence.len() >= 3 => {
                let info = trimmed[fence.len()..].trim().to_string();
                let block = Block {
                    line: n + 1,
                    info,
                    text: String::new(),
                };
                open = Some((indent, fence, block));
            }
            None => {}
            Some((_, f, _)) if trimmed.trim_end() == f.as_str() => {
                blocks.push(open.take().unwrap().2);
            }
            Some((indent, _, block)) => {
                let cut = line
                    .char_indices()
                    .take_while(|(i, c)| *i < *indent && *c == ' ')
                    .count();
                block.text.push_str(&line[cut..]);
                block.text.push('\n');
            }
        }
    }
    blocks
}

/// README.md and every page of the guide's sources.
fn documentation_files() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    let mut dirs = vec![repo().join("docs/src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn the_guide_builds_and_every_link_and_anchor_resolves() {
    let out = tempfile::tempdir().unwrap();
    let book = out.path().join("book");
    let build = std::process::Command::new(mdbook())
        .arg("build")
        .arg(repo().join("docs"))
        .arg("--dest-dir")
        .arg(&book)
        .output()
        .expect("mdbook is needed (scripts/setup.sh builds it into ~/.cache/radstream/tools)");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    assert!(build.status.success(), "mdbook build docs failed:\n{log}");
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    assert!(
        complaints.is_empty(),
        "mdbook warns:\n{}",
        complaints.join("\n")
    );
    assert!(book.join("operate/configuration.html").is_file());

    let check = std::process::Command::new("python3")
        .arg(repo().join("tools/docs/check_book.py"))
        .arg(repo())
        .arg(&book)
        .output()
        .expect("python3");
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "broken links:\n{report}");
    assert!(report.contains("0 problems"), "{report}");
}

/// Every ```toml block of the README and the guide is loaded by the node's own configuration
/// loader (unknown keys refused, every section's checks run, only a missing certificate or
/// key file forgiven); TOML that is not node configuration is fenced ```toml,ignore.
#[test]
fn every_configuration_block_in_the_documentation_is_accepted_by_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    let mut problems = Vec::new();
    for file in documentation_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for block in fenced_blocks(&text) {
            let mut words = block.info.split([',', ' ']);
            if words.next() != Some("toml") || words.any(|w| w == "ignore") {
                continue;
            }
            let path = dir.path().join(format!("block-{checked}.toml"));
            std::fs::write(&path, &block.text).unwrap();
            checked += 1;
            let result = Settings::load_layers(None, Some(&path));
            // A certificate or key file an example names need not exist on this machine;
            // every other refusal (unknown key, wrong type, bad value) is a broken example.
            let missing_file = matches!(&result, Err(ConfigError::Invalid { problem, .. })
                if problem.contains("No such file or directory"));
            if let (Err(e), false) = (result, missing_file) {
                problems.push(format!(
                    "{}:{}: {e}",
                    file.strip_prefix(repo()).unwrap_or(&file).display(),
                    block.line
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked >= 10, "only {checked} configuration blocks found");
}

/// `text` with each whole-number token in `ports` replaced by its free port.
fn with_ports(text: &str, ports: &[(&str, u16)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        out.push_str(&rest[..start]);
        let before_is_word = out
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
        let len = rest[start..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len() - start);
        let number = &rest[start..start + len];
        let after_is_word = rest[start + len..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        match ports.iter().find(|(p, _)| *p == number) {
            Some((_, port)) if !before_is_word && !after_is_word => out.push_str(&port.to_string()),
            _ => out.push_str(number),
        }
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    out
}

/// A process group started for the tour, killed with all its children when dropped.
struct Group {
    child: std::process::Child,
    name: String,
    log: PathBuf,
}

impl Group {
    fn start(name: &str, script: &str, cwd: &Path) -> Group {
        use std::os::unix::process::CommandExt;
        let log = cwd.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("bash");
        Group {
            child,
            name: name.to_string(),
            log,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The last lines each of `groups` printed, for a failure message.
fn last_lines(groups: &[Group]) -> String {
    groups
        .iter()
        .map(|g| {
            let out = g.output();
            let lines: Vec<&str> = out.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            format!("--- {} (last lines) ---\n{tail}\n", g.name)
        })
        .collect()
}

impl Drop for Group {
    fn drop(&mut self) {
        // killpg itself: procps-ng 4.0.2's `kill -KILL -PGID` signals every process.
        if let Ok(pgid) = libc::pid_t::try_from(self.child.id()) {
            if pgid > 1 {
                // SAFETY: a plain system call on the group this test started.
                unsafe { libc::killpg(pgid, libc::SIGKILL) };
            }
        }
        let _ = self.child.wait();
    }
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// The README's tour, literally: its `sh tour-service` blocks (the node and Orthanc) are
/// started in the background, then its `sh tour` blocks run as one shell script, in a
/// folder laid out like the repository after `scripts/run.sh`: the configuration, the
/// fixtures, the models and `.venv`, and the node's binary as `target/release/radstream`.
/// `scripts/run.sh` there runs that binary (its setup and release build are what the test
/// suite's own setup and build already did). The only change to the text is the ports: each
/// default (8080, 11112, 4243, 8043) becomes a free one, so the test runs beside others.
#[test]
fn the_readme_tour_runs() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let blocks = fenced_blocks(&readme);
    let services: Vec<&Block> = blocks
        .iter()
        .filter(|b| b.info == "sh tour-service")
        .collect();
    let steps: Vec<&Block> = blocks.iter().filter(|b| b.info == "sh tour").collect();
    assert_eq!(services.len(), 2, "the node and the PACS");
    assert!(steps.len() >= 6, "tour steps: {}", steps.len());

    let (http, dicom, pacs_dicom, pacs_http) = (free_port(), free_port(), free_port(), free_port());
    let ports = [
        ("8080", http),
        ("11112", dicom),
        ("4243", pacs_dicom),
        ("8043", pacs_http),
    ];
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("config")).unwrap();
    for name in ["radstream.toml", "tour.toml", "tour-orthanc.json"] {
        let text = std::fs::read_to_string(repo().join("config").join(name)).unwrap();
        std::fs::write(root.join("config").join(name), with_ports(&text, &ports)).unwrap();
    }
    for name in ["fixtures", "models", ".venv", "ohif", "docs"] {
        if repo().join(name).exists() {
            std::os::unix::fs::symlink(repo().join(name), root.join(name)).unwrap();
        }
    }
    std::fs::create_dir_all(root.join("target/release")).unwrap();
    std::os::unix::fs::symlink(radstream_bin(), root.join("target/release/radstream")).unwrap();
    std::fs::create_dir_all(root.join("scripts")).unwrap();
    let shim = root.join("scripts/run.sh");
    std::fs::write(
        &shim,
        "#!/bin/sh\n# Stands in for scripts/run.sh: setup and build are done.\n\
         exec target/release/radstream serve \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let running: Vec<Group> = services
        .iter()
        .enumerate()
        .map(|(i, b)| Group::start(&format!("service-{i}"), &with_ports(&b.text, &ports), root))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !ports.iter().all(|(_, p)| port_open(*p)) {
        assert!(
            Instant::now() < deadline,
            "services did not start:\n{}",
            last_lines(&running)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let mut script = String::from("set -e\n");
    for (i, step) in steps.iter().enumerate() {
        script.push_str(&format!(
            "echo '### tour step {} (README.md:{})'\n",
            i + 1,
            step.line
        ));
        script.push_str(&with_ports(&step.text, &ports));
    }
    let mut tour = Group::start("tour", &script, root);
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = tour.child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // The event stream the tour started in the background writes to the same log: give it
    // a moment to have printed the result's event.
    let printed = Instant::now() + Duration::from_secs(5);
    while !tour.output().contains("inference.completed") && Instant::now() < printed {
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = tour.output();
    let context = || format!("--- tour ---\n{output}\n{}", last_lines(&running));
    assert!(
        status.is_some_and(|s| s.success()),
        "the tour failed or hung ({status:?}):\n{}",
        context()
    );
    for expected in [
        "the node answers C-ECHO",
        "study.complete",
        "inference.completed",
        "\"resourceType\":\"Bundle\"",
        "DiagnosticReport",
        "\"SR\"",
        "rsk_",
        "<title>",
    ] {
        assert!(
            output.contains(expected),
            "tour output lacks {expected:?}:\n{}",
            context()
        );
    }
    let node_log = running[0].output();
    assert!(
        node_log.contains(&format!("http://127.0.0.1:{http}/docs")),
        "the node says where its documentation is:\n{}",
        context()
    );
    // Shown with --nocapture: what a newcomer sees in the tour's terminal.
    println!("{output}");
    drop(tour);
}

#[test]
fn ports_are_replaced_as_whole_numbers_only() {
    let ports = [("8080", 1), ("11112", 2)];
    assert_eq!(
        with_ports(
            "localhost:8080 11112 180800 v8080 1.8080 port = 11112\n",
            &ports
        ),
        "localhost:1 2 180800 v8080 1.8080 port = 2\n"
    );
    let blocks = fenced_blocks("a\n```sh tour\necho 1\n```\n  ```toml\n  x = 1\n  ```\n");
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].info, "sh tour");
    assert_eq!(blocks[0].text, "echo 1\n");
    assert_eq!(blocks[1].text, "x = 1\n");
}
