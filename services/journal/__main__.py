"""journal entry point: the usual service start, with the database-aware runner."""

from quantum.app import connect, runner_config, subscription
from quantum.config import load
from quantum.contracts.events import EVENT_TYPES
from quantum.observability import logging as qlog
from quantum.observability import metrics
from quantum.registry.fleet import all_setting_keys, service
from services.journal.config import Settings
from services.journal.service import NAME, JournalRunner, JournalService


def main() -> None:
    spec = service(NAME)
    settings = load(Settings, known=all_setting_keys())
    log = qlog.configure(NAME, settings.log_level)
    client = connect(settings.redis_url)
    metrics.serve(spec.port if settings.metrics_port == -1 else settings.metrics_port)
    journal = JournalService(settings, client)
    runner = JournalRunner(client, journal, subscription(spec), EVENT_TYPES,
                           runner_config(settings))
    runner.install_signal_handlers()
    log.info("starting", database=journal.database_label)
    runner.run()


if __name__ == "__main__":
    main()
