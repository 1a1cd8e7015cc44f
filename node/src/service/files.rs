//! The service files, one pure function each: the systemd user unit, the launchd agent's
//! plist and the Task Scheduler's XML, each with its format's quoting.

use super::{
    DESCRIPTION, LAUNCHD_LABEL, LAUNCHD_LOG, RESTART_SECS, STOP_TIMEOUT_SECS, Spec, WINDOWS_TASK,
    WRITTEN_BY,
};
use crate::polite::Priority;

/// One word of a systemd `ExecStart=` line: `%` and `$` doubled (specifiers and variables),
/// and double quotes, with `\` and `"` escaped, around anything but plain characters.
pub fn systemd_word(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._:,+=@-%$".contains(c);
    if !escaped.is_empty() && escaped.chars().all(safe) {
        return escaped;
    }
    let mut quoted = String::from("\"");
    for c in escaped.chars() {
        if c == '\\' || c == '"' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// The systemd user unit (`~/.config/systemd/user/canopy-node.service`).
pub fn systemd_user_unit(spec: &Spec) -> String {
    let exec: Vec<String> = std::iter::once(spec.exe())
        .chain(spec.args())
        .map(systemd_word)
        .collect();
    let mut unit = format!(
        "# {WRITTEN_BY}\n\
         [Unit]\n\
         Description={DESCRIPTION}\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=exec\n\
         ExecStart={exec}\n\
         # SIGTERM: the node hands its task back to the coordinator and leaves.\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec={STOP_TIMEOUT_SECS}\n\
         Restart=on-failure\n\
         RestartSec={RESTART_SECS}\n\
         # Exit status 2 is a command-line error, which a restart cannot fix.\n\
         RestartPreventExitStatus=2\n",
        exec = exec.join(" "),
    );
    if spec.priority() == Priority::Low {
        unit.push_str("Nice=19\nIOSchedulingClass=idle\n");
    }
    unit.push_str("\n[Install]\nWantedBy=default.target\n");
    unit
}

/// Text escaped for XML: `&`, `<`, `>`, `"` and `'` as entities.
pub fn xml_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The launchd agent (`~/Library/LaunchAgents/org.canopy.node.plist`).
pub fn launchd_plist(spec: &Spec) -> String {
    let string = |s: &str| format!("<string>{}</string>", xml_escape(s));
    let arguments: Vec<String> = std::iter::once(spec.exe())
        .chain(spec.args())
        .map(|a| format!("\t\t{}\n", string(a)))
        .collect();
    let log = string(&format!(
        "{}/{LAUNCHD_LOG}",
        spec.data_dir().trim_end_matches('/')
    ));
    let priority = match spec.priority() {
        Priority::Low => {
            "\t<key>LowPriorityIO</key>\n\t<true/>\n\t<key>Nice</key>\n\t<integer>19</integer>\n"
        }
        Priority::Normal => "",
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <!-- {WRITTEN_BY} -->\n\
         <plist version=\"1.0\">\n\
         <dict>\n\
         \t<key>Label</key>\n\t{label}\n\
         \t<key>ProgramArguments</key>\n\t<array>\n{arguments}\t</array>\n\
         \t<key>WorkingDirectory</key>\n\t{data_dir}\n\
         \t<key>RunAtLoad</key>\n\t<true/>\n\
         \t<key>KeepAlive</key>\n\t<dict>\n\t\t<key>SuccessfulExit</key>\n\t\t<false/>\n\t</dict>\n\
         \t<key>ThrottleInterval</key>\n\t<integer>{RESTART_SECS}</integer>\n\
         \t<key>ExitTimeOut</key>\n\t<integer>{STOP_TIMEOUT_SECS}</integer>\n\
         \t<key>ProcessType</key>\n\t<string>Background</string>\n\
         {priority}\
         \t<key>StandardOutPath</key>\n\t{log}\n\
         \t<key>StandardErrorPath</key>\n\t{log}\n\
         </dict>\n\
         </plist>\n",
        label = string(LAUNCHD_LABEL),
        arguments = arguments.concat(),
        data_dir = string(spec.data_dir()),
    )
}

/// One argument of a Windows command line, quoted as `CommandLineToArgvW` and the C runtime
/// split it: double quotes around words with spaces, tabs or quotes, `\"` for a quote, and
/// the backslashes before a quote doubled.
pub fn windows_word(word: &str) -> String {
    if !word.is_empty() && !word.contains([' ', '\t', '"']) {
        return word.to_owned();
    }
    let mut quoted = String::from("\"");
    let mut backslashes = 0;
    for c in word.chars() {
        match c {
            '\\' => backslashes += 1,
            '"' => {
                quoted.push_str(&"\\".repeat(2 * backslashes + 1));
                quoted.push('"');
                backslashes = 0;
            }
            c => {
                quoted.push_str(&"\\".repeat(backslashes));
                quoted.push(c);
                backslashes = 0;
            }
        }
    }
    quoted.push_str(&"\\".repeat(2 * backslashes));
    quoted.push('"');
    quoted
}

/// The Task Scheduler task, run as `user` (`DOMAIN\name`) at its logon. Encoded as UTF-16
/// by [`Manager::encode`](super::Manager::encode), as `schtasks /Create /XML` reads it.
pub fn windows_task_xml(spec: &Spec, user: &str) -> String {
    let command = match spec.exe().contains(' ') {
        true => format!("\"{}\"", spec.exe()),
        false => spec.exe().to_owned(),
    };
    let arguments: Vec<String> = spec.args().into_iter().map(windows_word).collect();
    // 9 and 10 are the idle class (whatever else runs comes first), 4 to 6 normal.
    let priority = match spec.priority() {
        Priority::Low => 9,
        Priority::Normal => 6,
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-16\"?>\n\
         <!-- {WRITTEN_BY} -->\n\
         <Task version=\"1.2\" xmlns=\"http://schemas.microsoft.com/windows/2004/02/mit/task\">\n\
         \x20 <RegistrationInfo>\n\
         \x20   <Description>{DESCRIPTION}</Description>\n\
         \x20   <URI>\\{task}</URI>\n\
         \x20 </RegistrationInfo>\n\
         \x20 <Triggers>\n\
         \x20   <LogonTrigger>\n\
         \x20     <Enabled>true</Enabled>\n\
         \x20     <UserId>{user}</UserId>\n\
         \x20   </LogonTrigger>\n\
         \x20 </Triggers>\n\
         \x20 <Principals>\n\
         \x20   <Principal id=\"Author\">\n\
         \x20     <UserId>{user}</UserId>\n\
         \x20     <LogonType>InteractiveToken</LogonType>\n\
         \x20     <RunLevel>LeastPrivilege</RunLevel>\n\
         \x20   </Principal>\n\
         \x20 </Principals>\n\
         \x20 <Settings>\n\
         \x20   <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>\n\
         \x20   <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>\n\
         \x20   <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>\n\
         \x20   <AllowHardTerminate>true</AllowHardTerminate>\n\
         \x20   <StartWhenAvailable>true</StartWhenAvailable>\n\
         \x20   <RunOnlyIfNetworkAvailable>false</RunOnlyIfNetworkAvailable>\n\
         \x20   <IdleSettings>\n\
         \x20     <StopOnIdleEnd>false</StopOnIdleEnd>\n\
         \x20     <RestartOnIdle>false</RestartOnIdle>\n\
         \x20   </IdleSettings>\n\
         \x20   <AllowStartOnDemand>true</AllowStartOnDemand>\n\
         \x20   <Enabled>true</Enabled>\n\
         \x20   <Hidden>false</Hidden>\n\
         \x20   <RunOnlyIfIdle>false</RunOnlyIfIdle>\n\
         \x20   <WakeToRun>false</WakeToRun>\n\
         \x20   <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>\n\
         \x20   <Priority>{priority}</Priority>\n\
         \x20   <RestartOnFailure>\n\
         \x20     <Interval>PT1M</Interval>\n\
         \x20     <Count>999</Count>\n\
         \x20   </RestartOnFailure>\n\
         \x20 </Settings>\n\
         \x20 <Actions Context=\"Author\">\n\
         \x20   <Exec>\n\
         \x20     <Command>{command}</Command>\n\
         \x20     <Arguments>{arguments}</Arguments>\n\
         \x20     <WorkingDirectory>{data_dir}</WorkingDirectory>\n\
         \x20   </Exec>\n\
         \x20 </Actions>\n\
         </Task>\n",
        task = xml_escape(WINDOWS_TASK),
        user = xml_escape(user),
        command = xml_escape(&command),
        arguments = xml_escape(&arguments.join(" ")),
        data_dir = xml_escape(spec.data_dir()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Manager;
    use crate::service::tests::{ADDR, AWKWARD, argv, awkward, spec_with};

    /// Splits an `ExecStart=` value as systemd does for the words [`systemd_word`] writes.
    fn systemd_split(line: &str) -> Vec<String> {
        let (mut words, mut word, mut started, mut quoted) = (vec![], String::new(), false, false);
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '%' | '$' => {
                    assert_eq!(chars.next(), Some(c), "a lone {c} in {line}");
                    word.push(c);
                }
                '"' => quoted = !quoted,
                '\\' if quoted => word.push(chars.next().unwrap()),
                '\\' => panic!("an unquoted backslash in {line}"),
                ' ' if !quoted => {
                    if started {
                        words.push(std::mem::take(&mut word));
                    }
                    started = false;
                    continue;
                }
                c => word.push(c),
            }
            started = true;
        }
        assert!(!quoted, "an open quote in {line}");
        if started {
            words.push(word);
        }
        words
    }

    /// Splits arguments as `CommandLineToArgvW` does.
    fn windows_split(line: &str) -> Vec<String> {
        let chars: Vec<char> = line.chars().collect();
        let (mut words, mut i) = (vec![], 0);
        loop {
            while chars.get(i) == Some(&' ') {
                i += 1;
            }
            if i == chars.len() {
                return words;
            }
            let (mut word, mut quoted) = (String::new(), false);
            while let Some(&c) = chars.get(i) {
                match c {
                    '\\' => {
                        let n = chars[i..].iter().take_while(|&&c| c == '\\').count();
                        i += n;
                        if chars.get(i) == Some(&'"') {
                            word.push_str(&"\\".repeat(n / 2));
                            if n % 2 == 1 {
                                word.push('"');
                                i += 1;
                            }
                        } else {
                            word.push_str(&"\\".repeat(n));
                        }
                        continue;
                    }
                    '"' => quoted = !quoted,
                    ' ' if !quoted => break,
                    c => word.push(c),
                }
                i += 1;
            }
            words.push(word);
        }
    }

    /// An XML element: its name, attributes, text and children.
    #[derive(Debug)]
    struct Element {
        name: String,
        attributes: Vec<(String, String)>,
        text: String,
        children: Vec<Element>,
    }

    impl Element {
        fn child(&self, name: &str) -> &Element {
            let found = self.children.iter().find(|c| c.name == name);
            found.unwrap_or_else(|| panic!("no <{name}> in <{}>", self.name))
        }

        fn path(&self, path: &str) -> &Element {
            path.split('/').fold(self, |e, name| e.child(name))
        }

        /// A plist `<dict>`'s value for `key`.
        fn plist(&self, key: &str) -> &Element {
            let at = self
                .children
                .iter()
                .position(|c| c.name == "key" && c.text == key);
            let at = at.unwrap_or_else(|| panic!("no key {key}"));
            &self.children[at + 1]
        }
    }

    /// Parses `bytes` with a real XML parser: it must be well-formed.
    fn parse_xml(bytes: &[u8]) -> Element {
        use xml::reader::{EventReader, XmlEvent};
        let mut stack = vec![Element {
            name: "document".into(),
            attributes: vec![],
            text: String::new(),
            children: vec![],
        }];
        for event in EventReader::new(bytes) {
            match event.expect("well-formed XML") {
                XmlEvent::StartElement {
                    name, attributes, ..
                } => stack.push(Element {
                    name: name.local_name,
                    attributes: attributes
                        .into_iter()
                        .map(|a| (a.name.local_name, a.value))
                        .collect(),
                    text: String::new(),
                    children: vec![],
                }),
                XmlEvent::EndElement { .. } => {
                    let done = stack.pop().unwrap();
                    stack.last_mut().unwrap().children.push(done);
                }
                XmlEvent::Characters(text) => stack.last_mut().unwrap().text.push_str(&text),
                _ => {}
            }
        }
        let mut document = stack.pop().unwrap();
        assert!(stack.is_empty());
        assert_eq!(document.children.len(), 1);
        document.children.pop().unwrap()
    }

    #[test]
    fn systemd_words_are_quoted_and_escaped() {
        assert_eq!(systemd_word("/usr/bin/canopy-node"), "/usr/bin/canopy-node");
        assert_eq!(systemd_word("--org=ACME"), "--org=ACME");
        assert_eq!(systemd_word("/opt/My Node"), "\"/opt/My Node\"");
        assert_eq!(systemd_word("100%"), "100%%");
        assert_eq!(systemd_word("$HOME"), "$$HOME");
        assert_eq!(systemd_word(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(systemd_word(""), "\"\"");
        assert_eq!(systemd_word(";"), "\";\"");
        assert_eq!(systemd_word("Zoë"), "\"Zoë\"");
        for word in ["", ";", "a b", AWKWARD, "x\\", "\"", "é 100%%"] {
            assert_eq!(systemd_split(&systemd_word(word)), [word], "{word}");
        }
    }

    #[test]
    fn the_systemd_unit_runs_join_with_every_argument_intact() {
        let spec = awkward();
        let unit = systemd_user_unit(&spec);
        let mut sections = vec![];
        let mut keys = vec![];
        for line in unit.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                sections.push(section);
                continue;
            }
            let (key, value) = line.split_once('=').expect("key=value");
            assert!(key.chars().all(|c| c.is_ascii_alphanumeric()), "{line}");
            keys.push((sections.len(), key, value));
        }
        assert_eq!(sections, ["Unit", "Service", "Install"]);
        let value = |key: &str| {
            let found = keys.iter().find(|(_, k, _)| *k == key);
            found.unwrap_or_else(|| panic!("no {key}=")).2
        };
        let exec = systemd_split(value("ExecStart"));
        assert_eq!(exec, argv(&spec));
        assert_eq!(
            exec[..6],
            [
                "/opt/Canopy Node/bin/canopy-node",
                "--data-dir",
                AWKWARD,
                "--identity",
                "/home/ada/keys/host a.key",
                "join"
            ]
        );
        assert_eq!(
            exec[6..],
            [
                ADDR,
                "--name",
                "Ada & \"Bob\" <lab>",
                "--org=$ACME 50%",
                "--gpus",
                "all"
            ]
        );
        for (key, expected) in [
            ("After", "network-online.target"),
            ("Restart", "on-failure"),
            ("RestartSec", "30"),
            ("KillSignal", "SIGTERM"),
            ("TimeoutStopSec", "60"),
            ("Nice", "19"),
            ("IOSchedulingClass", "idle"),
            ("WantedBy", "default.target"),
        ] {
            assert_eq!(value(key), expected, "{key}");
        }
        assert!(value("Description").contains("Canopy"));
        assert_eq!(keys.last().unwrap().0, 3, "WantedBy in [Install]");
    }

    #[test]
    fn priority_normal_drops_the_low_priority_settings() {
        let spec = spec_with("/bin/canopy-node", "/d", None, &["--priority", "normal"]).unwrap();
        assert_eq!(spec.priority(), Priority::Normal);
        assert!(!systemd_user_unit(&spec).contains("Nice="));
        assert!(!launchd_plist(&spec).contains("Nice"));
        assert!(windows_task_xml(&spec, "u").contains("<Priority>6</Priority>"));
        let low = spec_with("/bin/canopy-node", "/d", None, &[]).unwrap();
        assert_eq!(low.priority(), Priority::Low);
        assert_eq!(low.args(), ["--data-dir", "/d", "join", ADDR]);
    }

    #[test]
    fn xml_escapes_the_five_characters() {
        assert_eq!(
            xml_escape(r#"a&b <c> "d" 'e'"#),
            "a&amp;b &lt;c&gt; &quot;d&quot; &apos;e&apos;"
        );
        assert_eq!(xml_escape("plain"), "plain");
    }

    #[test]
    fn the_launchd_plist_parses_back_to_the_command_line() {
        let spec = awkward();
        let plist = parse_xml(launchd_plist(&spec).as_bytes());
        assert_eq!(plist.name, "plist");
        let dict = plist.child("dict");
        assert_eq!(dict.plist("Label").text, LAUNCHD_LABEL);
        let arguments: Vec<&str> = dict
            .plist("ProgramArguments")
            .children
            .iter()
            .map(|s| s.text.as_str())
            .collect();
        assert_eq!(arguments, argv(&spec));
        assert_eq!(dict.plist("RunAtLoad").name, "true");
        let keep_alive = dict.plist("KeepAlive");
        assert_eq!(keep_alive.plist("SuccessfulExit").name, "false");
        assert_eq!(dict.plist("ProcessType").text, "Background");
        assert_eq!(dict.plist("LowPriorityIO").name, "true");
        assert_eq!(dict.plist("Nice").text, "19");
        assert_eq!(dict.plist("ExitTimeOut").text, "60");
        let log = format!("{AWKWARD}/{LAUNCHD_LOG}");
        assert_eq!(dict.plist("StandardOutPath").text, log);
        assert_eq!(dict.plist("StandardErrorPath").text, log);
        assert_eq!(dict.plist("WorkingDirectory").text, AWKWARD);
    }

    #[test]
    fn windows_words_split_back_as_windows_splits_them() {
        assert_eq!(windows_word("join"), "join");
        assert_eq!(windows_word(r"C:\Canopy"), r"C:\Canopy");
        assert_eq!(windows_word(r"C:\My Canopy\"), r#""C:\My Canopy\\""#);
        assert_eq!(windows_word(r#"say "hi""#), r#""say \"hi\"""#);
        assert_eq!(windows_word(""), "\"\"");
        let words = [
            "",
            "a b",
            r"C:\My Canopy\",
            r#"\"q\\"#,
            AWKWARD,
            r"\\srv\share x\",
        ];
        let line: Vec<String> = words.iter().map(|w| windows_word(w)).collect();
        assert_eq!(windows_split(&line.join(" ")), words);
    }

    #[test]
    fn the_windows_task_parses_back_to_the_command_line() {
        let spec = spec_with(
            r"C:\Program Files\Canopy\canopy-node.exe",
            r"C:\Users\Ada\AppData\Roaming\Canopy\canopy\data",
            None,
            &["--name", "Ada & \"Bob\" <lab>", "--country", "FR"],
        )
        .unwrap();
        let xml = Manager::TaskScheduler.encode(&windows_task_xml(&spec, r"LAB\ada&co"));
        assert_eq!(xml[..2], [0xFF, 0xFE], "UTF-16LE with its byte-order mark");
        let task = parse_xml(&xml);
        assert_eq!(task.name, "Task");
        let trigger = task.path("Triggers/LogonTrigger");
        assert_eq!(trigger.child("UserId").text, r"LAB\ada&co");
        assert_eq!(trigger.child("Enabled").text, "true");
        let principal = task.path("Principals/Principal");
        assert_eq!(
            principal.attributes,
            [("id".to_owned(), "Author".to_owned())]
        );
        assert_eq!(principal.child("LogonType").text, "InteractiveToken");
        let settings = task.child("Settings");
        for (path, expected) in [
            ("ExecutionTimeLimit", "PT0S"),
            ("DisallowStartIfOnBatteries", "false"),
            ("StopIfGoingOnBatteries", "false"),
            ("IdleSettings/StopOnIdleEnd", "false"),
            ("RestartOnFailure/Interval", "PT1M"),
            ("Priority", "9"),
        ] {
            assert_eq!(settings.path(path).text, expected, "{path}");
        }
        let exec = task.path("Actions/Exec");
        assert_eq!(
            exec.child("Command").text,
            r#""C:\Program Files\Canopy\canopy-node.exe""#
        );
        assert_eq!(windows_split(&exec.child("Arguments").text), spec.args());
        assert_eq!(exec.child("WorkingDirectory").text, spec.data_dir());
    }
}
