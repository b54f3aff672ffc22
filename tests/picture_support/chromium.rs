//! Headless Chromium: render a page to PNG and read the pixels back.

use std::path::Path;
use std::process::Command;

/// The Chromium binary, or a loud failure: this test must not pass by
/// skipping itself.
pub fn chromium() -> &'static str {
    for name in ["chromium", "chromium-browser"] {
        let found = Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if found {
            return name;
        }
    }
    panic!(
        "headless Chromium is needed to render the HTML picture: install it with \
         `apt-get install -y chromium` (.ci/run does)"
    );
}

/// `#rrggbb` of each page state, as the page's own stylesheet sets it.
pub fn legend_colours(html: &str) -> Vec<(String, [u8; 3])> {
    ["none", "zero", "shared", "clean", "dirty"]
        .iter()
        .map(|class| {
            let rule = format!(".{class}{{fill:#");
            let at = html
                .find(&rule)
                .unwrap_or_else(|| panic!("no colour for {class}"));
            let hex = &html[at + rule.len()..at + rule.len() + 6];
            let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).unwrap();
            (class.to_string(), [byte(0), byte(2), byte(4)])
        })
        .collect()
}

/// Run Chromium to completion; a hung browser is killed and fails the test
/// (a watchdog, not a performance bound).
pub fn render(html: &Path, png: &Path) {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1240,1400",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start chromium");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish rendering {}", html.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    assert!(
        status.success() && png.exists(),
        "chromium failed ({status}):\n{err}"
    );
}

/// The RGB pixels of a PNG file.
pub fn pixels(png_path: &Path) -> Vec<[u8; 3]> {
    let file = std::io::BufReader::new(std::fs::File::open(png_path).unwrap());
    let mut decoder = png::Decoder::new(file);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("PNG size")];
    let info = reader.next_frame(&mut buf).expect("PNG pixels");
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    buf[..info.line_size * info.height as usize]
        .chunks(info.line_size)
        .flat_map(|line| {
            line[..info.width as usize * channels]
                .chunks(channels)
                .map(|p| [p[0], p[1], p[2]])
        })
        .collect()
}
