//! Ships a job's log to the server as it is written: per step, in frames addressed by (step, byte
//! offset), resent until acknowledged, so a lost request or response loses nothing and doubles
//! nothing. A step's frames all go before the next step's (the server finishes a step's log when
//! the next one begins).
//!
//! Workflow commands a step prints are applied here, before anything leaves the runner:
//! `::add-mask::` (never logged; the value is masked from then on), `::group::`/`::endgroup::`,
//! `::error::`/`::warning::`/`::notice::` (logged, and kept as the step's annotations),
//! `::debug::`, and `::stop-commands::TOKEN` … `::TOKEN::`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::protocol::{Client, LogReply};

/// The most sent in one frame.
const FRAME: usize = 256 * 1024;
/// How long output may wait before it is sent.
const LINGER: Duration = Duration::from_millis(100);
/// The most annotations of one level a step keeps (as GitHub does).
pub const MAX_ANNOTATIONS_PER_LEVEL: usize = 10;
/// The most of an annotation's message kept.
const MAX_ANNOTATION_CHARS: usize = 4096;

/// A line longer than this is logged in pieces (a process that never prints a newline cannot make
/// the runner buffer without limit).
pub const MAX_LINE: usize = 64 * 1024;

/// An `::error::`, `::warning::` or `::notice::` a step printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Annotation {
    pub level: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_line: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub col: Option<i64>,
}

enum Piece {
    Step(i64),
    Bytes(Vec<u8>),
}

/// What a step asked for through GitHub's older workflow commands (`::set-output`,
/// `::save-state`, and, where allowed, `::set-env` and `::add-path`); the job applies it when
/// the step ends, as it applies the step's files.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LegacyCommands {
    pub outputs: Vec<(String, String)>,
    pub state: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
    pub path: Vec<String>,
    /// A command could not be applied (the step fails, as on GitHub).
    pub failed: bool,
}

#[derive(Default)]
struct Commands {
    masks: Vec<String>,
    /// Set by `::stop-commands::TOKEN`: commands are not applied until `::TOKEN::`.
    stopped: Option<String>,
    annotations: Vec<Annotation>,
    legacy: LegacyCommands,
    /// `ACTIONS_ALLOW_UNSECURE_COMMANDS=true` in the running step's environment.
    unsecure_allowed: bool,
}

/// GitHub's message for `::set-env` and `::add-path` without `ACTIONS_ALLOW_UNSECURE_COMMANDS`.
fn disabled_message(command: &str) -> String {
    format!(
        "The `{command}` command is disabled. Please upgrade to using Environment Files or opt into unsecure command execution by setting the `ACTIONS_ALLOW_UNSECURE_COMMANDS` environment variable to `true`. For more information see: https://github.blog/changelog/2020-10-01-github-actions-deprecating-set-env-and-add-path-commands/"
    )
}

/// The writing end; dropping every clone lets the shipper send what is left and finish. Every
/// line goes through the job's masks (values registered with `::add-mask::`) before it leaves the
/// runner.
#[derive(Clone)]
pub struct LogWriter {
    tx: mpsc::UnboundedSender<Piece>,
    commands: Arc<Mutex<Commands>>,
}

impl LogWriter {
    /// What follows belongs to step `number` (0: before the first step).
    pub fn step(&self, number: i64) {
        let _ = self.tx.send(Piece::Step(number));
    }

    /// Masks `value` (and, from now on, every occurrence of it) in this job's log.
    pub fn add_mask(&self, value: &str) {
        let value = value.trim();
        if value.is_empty() {
            return;
        }
        if let Ok(mut commands) = self.commands.lock()
            && !commands.masks.iter().any(|m| m == value)
        {
            commands.masks.push(value.to_owned());
            // Longest first, so a value containing another is masked whole.
            commands.masks.sort_by_key(|m| std::cmp::Reverse(m.len()));
        }
    }

    /// Masks a secret: its value and the forms it may be printed in (base64 at each alignment,
    /// URL-encoded, JSON-escaped) and, for a value of several lines, each line. Forms shorter than
    /// 4 characters are not masked (they would hide too much of everything else).
    pub fn add_secret(&self, value: &str) {
        for form in secret_forms(value) {
            if form.trim().chars().count() >= MIN_MASK_CHARS {
                self.add_mask(&form);
            }
        }
    }

    /// Where to cut `bytes` (a line too long to keep whole): as late as possible, but never inside
    /// something masked, nor inside the start of something masked that may go on in what follows.
    pub fn safe_cut(&self, bytes: &[u8]) -> usize {
        let masks: Vec<Vec<u8>> =
            self.commands.lock().map(|c| c.masks.iter().map(|m| m.as_bytes().to_vec()).collect()).unwrap_or_default();
        let longest = masks.iter().map(Vec::len).max().unwrap_or(0);
        let mut cut = bytes.len().saturating_sub(longest.saturating_sub(1));
        while cut > 0 {
            // The earliest start of a masked value (or of its beginning) that the cut would split.
            let split = masks
                .iter()
                .filter_map(|mask| {
                    (cut.saturating_sub(mask.len().saturating_sub(1))..cut).find(|&start| {
                        let end = Ord::min(start + mask.len(), bytes.len());
                        bytes[start..end] == mask[..end - start]
                    })
                })
                .min();
            match split {
                Some(start) => cut = start,
                None => return cut,
            }
        }
        bytes.len() // all of it is (the start of) one masked value: nothing better to do
    }

    fn masked(&self, text: &str) -> String {
        let mut text = text.to_owned();
        if let Ok(commands) = self.commands.lock() {
            for mask in commands.masks.iter() {
                if text.contains(mask.as_str()) {
                    text = text.replace(mask.as_str(), "***");
                }
            }
        }
        text
    }

    /// A line of the runner's own. Each line goes out stamped with the time it was written, as
    /// GitHub's logs are (`2026-12-04T14:01:20.1230000Z text`): the job page can show when a line
    /// came, and the raw log reads as GitHub's does.
    pub fn line(&self, text: &str) {
        let stamp = gitstratum_core::Timestamp(now_ms()).log_stamp();
        let masked = self.masked(text);
        let mut out = String::with_capacity(masked.len() + stamp.len() + 2);
        for line in masked.split('\n') {
            out.push_str(&stamp);
            out.push(' ');
            out.push_str(line);
            out.push('\n');
        }
        let _ = self.tx.send(Piece::Bytes(out.into_bytes()));
    }

    /// Starts a step: whether it may use `::set-env` and `::add-path`, and nothing left over
    /// from the step before.
    pub fn begin_step_commands(&self, unsecure_allowed: bool) {
        if let Ok(mut commands) = self.commands.lock() {
            commands.legacy = LegacyCommands::default();
            commands.unsecure_allowed = unsecure_allowed;
        }
    }

    /// What the step asked for through the older workflow commands.
    pub fn take_legacy_commands(&self) -> LegacyCommands {
        self.commands.lock().map(|mut c| std::mem::take(&mut c.legacy)).unwrap_or_default()
    }

    /// The annotations the steps printed since the last call.
    pub fn take_annotations(&self) -> Vec<Annotation> {
        self.commands.lock().map(|mut c| std::mem::take(&mut c.annotations)).unwrap_or_default()
    }

    /// A line a step printed: workflow commands are applied (`::add-mask::` is not logged at
    /// all); the rest is masked and logged.
    pub fn step_line(&self, line: &str) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some((command, properties, value)) = parse_command(line) else {
            self.line(line);
            return;
        };
        {
            let Ok(mut commands) = self.commands.lock() else { return };
            if let Some(token) = &commands.stopped {
                if command == token.as_str() {
                    commands.stopped = None;
                    return;
                }
                drop(commands);
                self.line(line);
                return;
            }
            if command == "stop-commands" {
                if !value.is_empty() {
                    commands.stopped = Some(value.clone());
                }
                return;
            }
        }
        match command {
            "add-mask" => self.add_mask(&value),
            "group" => self.line(&format!("##[group]{value}")),
            "endgroup" => self.line("##[endgroup]"),
            "debug" => self.line(&format!("##[debug]{value}")),
            "error" | "warning" | "notice" => {
                let message = self.masked(&value);
                self.line(&format!("##[{command}]{message}"));
                let property = |key: &str| properties.iter().find(|(k, _)| *k == key).map(|(_, v)| self.masked(v));
                let number = |key: &str| property(key).and_then(|v| v.trim().parse::<i64>().ok());
                let annotation = Annotation {
                    level: command.to_owned(),
                    message: message.chars().take(MAX_ANNOTATION_CHARS).collect(),
                    title: property("title"),
                    file: property("file"),
                    line: number("line"),
                    end_line: number("endLine"),
                    col: number("col"),
                };
                if let Ok(mut commands) = self.commands.lock()
                    && commands.annotations.iter().filter(|a| a.level == command).count() < MAX_ANNOTATIONS_PER_LEVEL
                {
                    commands.annotations.push(annotation);
                }
            }
            "set-output" | "save-state" | "set-env" => {
                let name = properties.iter().find(|(k, _)| *k == "name").map(|(_, v)| v.clone()).unwrap_or_default();
                let Ok(mut commands) = self.commands.lock() else { return };
                let refusal = if matches!(command, "set-env") && !commands.unsecure_allowed {
                    Some(disabled_message(command))
                } else if name.is_empty() {
                    Some(format!("Required field 'name' is missing in ##[{command}] command."))
                } else {
                    None
                };
                match refusal {
                    Some(why) => {
                        commands.legacy.failed = true;
                        drop(commands);
                        self.line(&format!("##[error]Unable to process command '{line}' successfully."));
                        self.line(&format!("##[error]{why}"));
                    }
                    None => {
                        let list = match command {
                            "set-output" => &mut commands.legacy.outputs,
                            "save-state" => &mut commands.legacy.state,
                            _ => &mut commands.legacy.env,
                        };
                        list.push((name, value));
                    }
                }
            }
            "add-path" => {
                let Ok(mut commands) = self.commands.lock() else { return };
                if !commands.unsecure_allowed {
                    commands.legacy.failed = true;
                    drop(commands);
                    self.line(&format!("##[error]Unable to process command '{line}' successfully."));
                    self.line(&format!("##[error]{}", disabled_message(command)));
                } else if !value.trim().is_empty() {
                    commands.legacy.path.retain(|p| *p != value);
                    commands.legacy.path.push(value);
                }
            }
            // A command this runner does not know is logged as it is.
            _ => self.line(line),
        }
    }
}

fn now_ms() -> i64 {
    use gitstratum_core::Clock;
    gitstratum_core::SystemClock.now().0
}

/// A workflow command's properties (`key=value` pairs), unescaped.
type Properties<'a> = Vec<(&'a str, String)>;

/// The shortest form of a secret that is masked.
const MIN_MASK_CHARS: usize = 4;

/// A secret value and the forms it may appear in: each line of it, base64 at the three
/// alignments it can have inside longer base64 text, URL-encoded and JSON-escaped.
pub fn secret_forms(value: &str) -> Vec<String> {
    use base64::Engine;
    let mut forms = vec![value.to_owned()];
    if value.contains('\n') {
        forms.extend(value.lines().map(|l| l.trim().to_owned()));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    for offset in 0..3usize {
        let mut bytes = vec![0u8; offset];
        bytes.extend_from_slice(value.as_bytes());
        let encoded = b64.encode(&bytes);
        // Characters that mix in the zero prefix, or the padding, depend on the neighbours.
        let skip = [0, 2, 3][offset];
        let tail = if bytes.len() % 3 == 0 { 0 } else { 1 + (3 - bytes.len() % 3) };
        if encoded.len() > skip + tail {
            forms.push(encoded[skip..encoded.len() - tail].to_owned());
        }
    }
    let url: String = value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    forms.push(url);
    if let Ok(json) = serde_json::to_string(value) {
        forms.push(json[1..json.len() - 1].to_owned());
    }
    forms.sort();
    forms.dedup();
    forms
}

/// `::name key=value,key=value::message` as (name, properties, message), with GitHub's escapes
/// (`%25`, `%0D`, `%0A`, and `%3A`, `%2C` in properties) undone.
fn parse_command(line: &str) -> Option<(&str, Properties<'_>, String)> {
    let rest = line.trim_start().strip_prefix("::")?;
    let (head, value) = rest.split_once("::")?;
    let (name, props) = head.split_once(' ').unwrap_or((head, ""));
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return None;
    }
    let properties =
        props.split(',').filter_map(|p| p.split_once('=')).map(|(k, v)| (k.trim(), unescape(v, true))).collect();
    Some((name, properties, unescape(value, false)))
}

fn unescape(text: &str, property: bool) -> String {
    let mut out = text.replace("%0D", "\r").replace("%0A", "\n");
    if property {
        out = out.replace("%3A", ":").replace("%2C", ",");
    }
    out.replace("%25", "%")
}

/// A step's log on its way: kept whole (up to what the server keeps of a step) until the next
/// step begins and everything of it is acknowledged, so a resend can always start where the
/// server says it has.
struct Segment {
    step: i64,
    data: Vec<u8>,
    acked: u64,
}

/// Starts shipping; await the handle (after dropping the writers) to know everything was sent.
/// `keep` is how much of one step's log is worth sending (the server's cap and a little more).
pub fn start(
    client: Client,
    runner: i64,
    job: i64,
    attempt: i64,
    keep: u64,
) -> (LogWriter, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Piece>();
    let keep = usize::try_from(keep).unwrap_or(usize::MAX).saturating_add(MAX_LINE);
    let task = tokio::spawn(async move {
        let mut segments: std::collections::VecDeque<Segment> = std::collections::VecDeque::new();
        let add = |segments: &mut std::collections::VecDeque<Segment>, piece: Piece| match piece {
            Piece::Step(step) => {
                if segments.back().is_none_or(|s| s.step != step) {
                    segments.push_back(Segment { step, data: Vec::new(), acked: 0 });
                }
            }
            Piece::Bytes(bytes) => {
                if segments.is_empty() {
                    segments.push_back(Segment { step: 0, data: Vec::new(), acked: 0 });
                }
                if let Some(segment) = segments.back_mut() {
                    let room = keep.saturating_sub(segment.data.len());
                    segment.data.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
            }
        };
        let unsent = |segments: &std::collections::VecDeque<Segment>| -> u64 {
            segments.iter().map(|s| s.data.len() as u64 - s.acked.min(s.data.len() as u64)).sum()
        };
        let mut open = true;
        let mut failures = 0u32;
        // When the oldest unsent output arrived: it waits at most LINGER, however busy the step.
        let mut since: Option<tokio::time::Instant> = None;
        loop {
            if open {
                let wait = since.map_or(LINGER, |t| LINGER.saturating_sub(t.elapsed()));
                match tokio::time::timeout(wait, rx.recv()).await {
                    Ok(Some(piece)) => {
                        add(&mut segments, piece);
                        if unsent(&segments) == 0 {
                            continue;
                        }
                        since.get_or_insert_with(tokio::time::Instant::now);
                        let due = since.is_some_and(|t| t.elapsed() >= LINGER);
                        if unsent(&segments) < FRAME as u64 && !due {
                            continue;
                        }
                    }
                    Ok(None) => open = false,
                    Err(_) => {} // linger passed: send what there is
                }
            }
            since = None;
            // Send until nothing is unsent, taking in what arrives meanwhile.
            loop {
                while let Ok(piece) = rx.try_recv() {
                    add(&mut segments, piece);
                }
                // Steps sent whole are done once a later one exists.
                while segments.len() > 1 && segments.front().is_some_and(|s| s.acked >= s.data.len() as u64) {
                    segments.pop_front();
                }
                let Some(segment) = segments.front_mut() else { break };
                let start = usize::try_from(segment.acked).unwrap_or(usize::MAX).min(segment.data.len());
                if start == segment.data.len() {
                    break;
                }
                let end = (start + FRAME).min(segment.data.len());
                let frame = segment.data[start..end].to_vec();
                match client.log(runner, job, attempt, segment.step, segment.acked, frame).await {
                    Ok(LogReply::Stored(offset)) => {
                        segment.acked = offset;
                        failures = 0;
                    }
                    Ok(LogReply::Gap(have)) => segment.acked = have.min(segment.data.len() as u64),
                    Ok(LogReply::LeaseLost) => return,
                    Err(e) => {
                        failures += 1;
                        if failures > 30 {
                            tracing::warn!(job, error = %e, "runner: giving up on shipping the log");
                            return;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            if !open && unsent(&segments) == 0 {
                return;
            }
        }
    });
    (LogWriter { tx, commands: Arc::default() }, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> (LogWriter, mpsc::UnboundedReceiver<Piece>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (LogWriter { tx, commands: Arc::default() }, rx)
    }

    fn lines(rx: &mut mpsc::UnboundedReceiver<Piece>) -> Vec<String> {
        let mut got = Vec::new();
        while let Ok(piece) = rx.try_recv() {
            if let Piece::Bytes(bytes) = piece {
                let text = String::from_utf8(bytes).expect("utf-8");
                let (stamp, line) = gitstratum_core::Timestamp::split_log_stamp(&text);
                assert!(stamp.is_some(), "every line is stamped: {text:?}");
                got.push(line.to_owned());
            }
        }
        got
    }

    #[test]
    fn masks_apply_to_every_later_line_and_add_mask_is_not_logged() {
        let (log, mut rx) = writer();
        log.step_line("before: hunter2");
        log.step_line("::add-mask::hunter2");
        log.step_line("after: hunter2 and hunter2\r");
        log.add_mask("hunter");
        log.line("runner says hunter2, hunter");
        assert_eq!(lines(&mut rx), ["before: hunter2\n", "after: *** and ***\n", "runner says ***, ***\n"]);
    }

    #[test]
    fn workflow_commands_are_applied_and_annotations_kept() {
        let (log, mut rx) = writer();
        log.step_line("::add-mask::s3cret");
        log.step_line("::group::Build");
        log.step_line("::error file=src/main.rs,line=3,col=7,title=Bad%2C bad::it broke: s3cret");
        log.step_line("::warning::careful");
        log.step_line("::endgroup::");
        log.step_line("::stop-commands::tok");
        log.step_line("::error::not a command now");
        log.step_line("::tok::");
        log.step_line("::notice::back on");
        log.step_line("::set-output name=x::y");
        log.step_line("::save-state name=s::v");
        log.step_line("::set-env name=E::1");
        assert_eq!(
            lines(&mut rx),
            [
                "##[group]Build\n",
                "##[error]it broke: ***\n",
                "##[warning]careful\n",
                "##[endgroup]\n",
                "::error::not a command now\n",
                "##[notice]back on\n",
                "##[error]Unable to process command '::set-env name=E::1' successfully.\n",
                "##[error]The `set-env` command is disabled. Please upgrade to using Environment Files or opt into unsecure command execution by setting the `ACTIONS_ALLOW_UNSECURE_COMMANDS` environment variable to `true`. For more information see: https://github.blog/changelog/2020-10-01-github-actions-deprecating-set-env-and-add-path-commands/\n",
            ]
        );
        let legacy = log.take_legacy_commands();
        assert_eq!(legacy.outputs, [("x".to_owned(), "y".to_owned())]);
        assert_eq!(legacy.state, [("s".to_owned(), "v".to_owned())]);
        assert!(legacy.failed && legacy.env.is_empty(), "set-env needs ACTIONS_ALLOW_UNSECURE_COMMANDS");
        log.begin_step_commands(true);
        log.step_line("::set-env name=E::1");
        log.step_line("::add-path::/opt/bin");
        let legacy = log.take_legacy_commands();
        assert_eq!(
            (legacy.env, legacy.path, legacy.failed),
            (vec![("E".to_owned(), "1".to_owned())], vec!["/opt/bin".to_owned()], false)
        );
        let annotations = log.take_annotations();
        assert_eq!(annotations.len(), 3);
        assert_eq!(
            annotations[0],
            Annotation {
                level: "error".into(),
                message: "it broke: ***".into(),
                title: Some("Bad, bad".into()),
                file: Some("src/main.rs".into()),
                line: Some(3),
                end_line: None,
                col: Some(7),
            }
        );
        assert_eq!((annotations[1].level.as_str(), annotations[2].level.as_str()), ("warning", "notice"));
        assert!(log.take_annotations().is_empty(), "taken once");
    }

    #[test]
    fn secrets_are_masked_in_every_form() {
        use base64::Engine;
        let (log, mut rx) = writer();
        let secret = "s3cr3t/value with spaces\nand a second line";
        log.add_secret(secret);
        log.add_secret("abc"); // too short to mask
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let printed = [
            format!("plain: {secret}").replace('\n', " "),
            "line: and a second line".to_owned(),
            format!("b64: {}", b64(secret)),
            format!("b64 inside: {}", b64(&format!("x{secret}"))),
            format!("b64 inside: {}", b64(&format!("xy{secret}z"))),
            "url: s3cr3t%2Fvalue%20with%20spaces%0Aand%20a%20second%20line".to_owned(),
            r#"json: {"v":"s3cr3t/value with spaces\nand a second line"}"#.to_owned(),
            "short: abc".to_owned(),
        ];
        for line in &printed {
            log.step_line(line);
        }
        let out = lines(&mut rx).concat();
        for leak in ["s3cr3t", "second line", &b64(secret)[4..20], "s3cr3t%2F"] {
            assert!(!out.contains(leak), "{leak:?} leaked in:\n{out}");
        }
        assert!(out.contains("short: abc"), "{out}");
        // The base64 forms inside longer text: nothing of the middle is left.
        for line in out.lines().filter(|l| l.starts_with("b64")) {
            assert!(line.contains("***") && line.len() < 30, "{line}");
        }
    }

    #[test]
    fn long_lines_are_never_cut_inside_a_secret() {
        let (log, _rx) = writer();
        log.add_secret("TOPSECRET");
        let mut line = vec![b'a'; 100];
        line.extend_from_slice(b"TOPSEC");
        // The secret may go on in what follows: the cut comes before it (held back by at most
        // the longest masked form).
        let cut = log.safe_cut(&line);
        assert!((90..=100).contains(&cut), "{cut}");
        line.extend_from_slice(b"RETbbbb");
        // Whole and done: cut at the latest point that starts nothing masked.
        let cut = log.safe_cut(&line);
        assert!(cut <= 100 || cut >= 109, "{cut}");
        let (plain, _rx) = writer();
        assert_eq!(plain.safe_cut(b"no masks"), 8);
    }

    #[test]
    fn a_step_keeps_at_most_ten_annotations_of_a_level() {
        let (log, _rx) = writer();
        for i in 0..15 {
            log.step_line(&format!("::warning::w{i}"));
        }
        log.step_line("::error::e");
        let annotations = log.take_annotations();
        assert_eq!(annotations.iter().filter(|a| a.level == "warning").count(), MAX_ANNOTATIONS_PER_LEVEL);
        assert_eq!(annotations.iter().filter(|a| a.level == "error").count(), 1);
    }
}
