//! Images: pulling from OCI registries, the content-addressed store, layer unpacking, and the image
//! index that ListImages/ImageStatus/RemoveImage serve.

use crate::Result;
use crate::config::Config;
use crate::state::Dirs;

/// The image store under `<root>/images`.
pub struct ImageStore {
    dir: std::path::PathBuf,
}

impl ImageStore {
    /// Opens (creating) the store and removes leftovers of interrupted pulls.
    pub async fn open(_cfg: &Config, dirs: &Dirs) -> Result<Self> {
        let dir = dirs.images();
        std::fs::create_dir_all(&dir)
            .map_err(|e| crate::Error::io(format!("create {}", dir.display()), e))?;
        Ok(ImageStore { dir })
    }

    /// The store's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}
