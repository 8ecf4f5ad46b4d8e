"""What the trainer delegates: checkpoints (save, find, resume) and logging (every number to the loggers)."""
from fl_lightning.trainer.connectors.checkpoint_connector import CheckpointConnector
from fl_lightning.trainer.connectors.logger_connector import LoggerConnector

__all__ = ["CheckpointConnector", "LoggerConnector"]
