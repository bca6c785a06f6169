"""journal entry point: the usual service start, with the database-aware runner."""

from quantum.app import run_service
from services.journal.config import Settings
from services.journal.service import NAME, JournalRunner, build

if __name__ == "__main__":
    run_service(NAME, Settings, build, JournalRunner)
