//! What the end-to-end tests of the application share beside
//! `livebase_testkit`: the application of `functions/`, served by the kit's
//! server (in this process, on port 0, over a temporary data folder).

use livebase_testkit::TestServer;

/// The application of `functions/` on a free port over a fresh data folder.
pub async fn start() -> TestServer {
    TestServer::start(livebase_functions::app()).await
}
