//! An export's files: `ID.EXT.part` while written, renamed to `ID.EXT`
//! once complete, so a download never sees half a file.
//!
//! Pages are appended with plain blocking writes: each is one page of rows
//! (a few hundred KiB at most) into the page cache, shorter than handing it
//! to the blocking pool would be; the file is synced once, before the
//! rename.

use std::fs::{File, OpenOptions};
use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::PathBuf;

use crate::store::exports::Export;

/// Where the files of exports live.
#[derive(Debug, Clone)]
pub struct Files {
    dir: PathBuf,
}

/// A partial file open for appending, and its length.
pub struct Output {
    file: File,
    len: u64,
}

impl Output {
    /// Appends `bytes`.
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// The file's length.
    pub fn len(&self) -> u64 {
        self.len
    }
}

impl Files {
    pub fn new(dir: PathBuf) -> Files {
        Files { dir }
    }

    fn name(export: &Export) -> String {
        format!("{}.{}", export.id, export.spec.format.extension())
    }

    /// The file of a finished export.
    pub fn finished(&self, export: &Export) -> PathBuf {
        self.dir.join(Files::name(export))
    }

    fn partial(&self, export: &Export) -> PathBuf {
        self.dir.join(format!("{}.part", Files::name(export)))
    }

    /// Opens the partial file cut back to the bytes the export saved (what
    /// was appended after the last saved page is written again).
    ///
    /// # Errors
    /// I/O failures, and a partial file shorter than the bytes saved.
    pub fn open_partial(&self, export: &Export) -> std::io::Result<Output> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.partial(export);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        let on_disk = file.metadata()?.len();
        if on_disk < export.bytes {
            return Err(std::io::Error::other(format!(
                "{} has {on_disk} bytes, fewer than the {} saved",
                path.display(),
                export.bytes
            )));
        }
        file.set_len(export.bytes)?;
        file.seek(SeekFrom::Start(export.bytes))?;
        Ok(Output {
            file,
            len: export.bytes,
        })
    }

    /// Syncs the partial file and renames it into place.
    ///
    /// # Errors
    /// I/O failures.
    pub fn finish(&self, export: &Export, output: Output) -> std::io::Result<()> {
        output.file.sync_all()?;
        drop(output);
        std::fs::rename(self.partial(export), self.finished(export))
    }

    /// Deletes the partial file, if any.
    pub fn remove_partial(&self, export: &Export) {
        remove(self.partial(export));
    }

    /// Deletes the finished file, if any.
    pub fn remove_finished(&self, export: &Export) {
        remove(self.finished(export));
    }
}

fn remove(path: PathBuf) {
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(path = %path.display(), error = %error, "could not delete an export file");
        }
    }
}
