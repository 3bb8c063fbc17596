//! Settings every node of a schema shares, in its `shared_settings` table:
//! the address of the writer, which other nodes forward mutations to, and
//! secrets made once by whichever node asks first (signing keys all nodes
//! must agree on).

use crate::{drop_client, engine_error, off_runtime, pg, PostgresPersistence, Result};

/// The row holding the writer's address; secrets are under `secret:` and
/// their name, so no secret can take its place.
const WRITER_URL: &str = "writer_url";

/// How many random bytes a shared secret has.
pub const SHARED_SECRET_LEN: usize = 32;

impl PostgresPersistence {
    /// Records `url` as where the other nodes reach the writer — this node,
    /// which must have claimed the schema. Fenced by its epoch: refused
    /// once another node has claimed the schema, and never overwrites the
    /// address a later epoch's writer recorded.
    pub fn advertise_writer(&self, url: &str) -> Result<()> {
        let epoch = self.epoch();
        if epoch == 0 {
            return Err(engine_error(format!(
                "only the node that claimed schema `{}` advertises itself as its writer",
                self.schema
            )));
        }
        let written = self.with_client(|c| {
            c.execute(
                "INSERT INTO shared_settings (name, value, epoch)
                 SELECT $1, $2, $3 WHERE (SELECT value FROM meta WHERE name = 'epoch') = $3
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value, epoch = excluded.epoch
                 WHERE shared_settings.epoch <= excluded.epoch",
                &[&WRITER_URL, &url.as_bytes(), &epoch],
            )
            .map_err(pg)
        })?;
        if written == 0 {
            return Err(engine_error(format!(
                "this node's claim on the database (epoch {epoch}) was taken over by another \
                 node: it is not the writer"
            )));
        }
        Ok(())
    }

    /// The writer's address and the epoch it was recorded at, if a writer
    /// advertised one ([`PostgresPersistence::advertise_writer`]).
    pub fn writer_url(&self) -> Result<Option<(String, i64)>> {
        let row = self.with_client(|c| {
            c.query_opt(
                "SELECT value, epoch FROM shared_settings WHERE name = $1",
                &[&WRITER_URL],
            )
            .map_err(pg)
        })?;
        row.map(|row| {
            let url = String::from_utf8(row.get(0)).map_err(|_| {
                livebase_store::StoreError::Corrupt("the writer's URL is not UTF-8".into())
            })?;
            Ok((url, row.get(1)))
        })
        .transpose()
    }

    /// The secret `name`: [`SHARED_SECRET_LEN`] random bytes, made by the
    /// first node that asks and the same for every node from then on (nodes
    /// asking at once agree: each inserts its own only if none is there,
    /// then all read the one that is).
    pub fn shared_secret(&self, name: &str) -> Result<Vec<u8>> {
        self.shared_secret_seeded(name, None)
    }

    /// As [`PostgresPersistence::shared_secret`], but a first caller that
    /// has a `seed` (the secret of a deployment moved here from one node's
    /// data folder) stores it rather than random bytes.
    pub fn shared_secret_seeded(&self, name: &str, seed: Option<&[u8]>) -> Result<Vec<u8>> {
        if name.is_empty() {
            return Err(engine_error("a shared secret needs a name".into()));
        }
        let key = format!("secret:{name}");
        let random: [u8; SHARED_SECRET_LEN] = rand::random();
        let mine = seed.unwrap_or(&random);
        self.with_client(|c| {
            c.execute(
                "INSERT INTO shared_settings (name, value, epoch) VALUES ($1, $2, 0)
                 ON CONFLICT (name) DO NOTHING",
                &[&key, &mine],
            )
            .map_err(pg)?;
            // A separate statement: its snapshot holds the row a concurrent
            // first caller committed (ours waited for it on the key).
            let row = c
                .query_one("SELECT value FROM shared_settings WHERE name = $1", &[&key])
                .map_err(pg)?;
            Ok(row.get::<_, Vec<u8>>(0))
        })
    }

    /// Runs `f` on a session of its own (these calls are rare: no
    /// connection is kept for them).
    fn with_client<T: Send>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<T> + Send,
    ) -> Result<T> {
        let mut client = self.client()?;
        let done = off_runtime(|| f(&mut client));
        drop_client(Some(client));
        done
    }
}

impl livebase_store::Lease for PostgresPersistence {
    fn try_claim(&self) -> Result<bool> {
        self.try_claim_node()
    }

    fn lost(&self) -> bool {
        self.lease_lost()
    }

    fn advertise(&self, url: &str) -> Result<()> {
        self.advertise_writer(url)
    }

    fn writer(&self) -> Result<Option<String>> {
        Ok(self.writer_url()?.map(|(url, _epoch)| url))
    }

    fn secret(&self, name: &str, seed: Option<&[u8]>) -> Result<Vec<u8>> {
        self.shared_secret_seeded(name, seed)
    }
}
