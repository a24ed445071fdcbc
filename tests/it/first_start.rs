//! Instances that start at the same moment on a new PostgreSQL database, as
//! a deployment's instances do on their first start. They must check and
//! migrate the schema one after the other, so every one of them comes up.

use reqwest::StatusCode;

use crate::database::PostgresDatabase;
use crate::harness::{Broker, Options};
use crate::outage::server_or_skip;

/// How many new databases get a simultaneous start. A race that loses only
/// sometimes then shows in almost every run.
const ROUNDS: usize = 3;

#[tokio::test]
async fn simultaneous_first_starts_all_come_up() {
    let Some(server) = server_or_skip() else {
        return;
    };
    for round in 0..ROUNDS {
        let database = PostgresDatabase::create(&server);
        let mut a = Broker::prepare(Options {
            database_url: Some(database.url()),
            ..Options::default()
        });
        let mut b = Broker::prepare_sibling(&a);

        // `serve` panics with the broker's log when the process exits
        // before it listens, which is what a lost migration race does.
        std::thread::scope(|scope| {
            scope.spawn(|| a.serve());
            scope.spawn(|| b.serve());
        });

        for (name, broker) in [("A", &a), ("B", &b)] {
            let readiness = reqwest::get(broker.url("/readyz"))
                .await
                .unwrap_or_else(|error| panic!("round {round}: GET /readyz on {name}: {error}"));
            assert_eq!(
                readiness.status(),
                StatusCode::OK,
                "round {round}: instance {name} is not ready; log:\n{}",
                broker.log()
            );
        }
    }
}
