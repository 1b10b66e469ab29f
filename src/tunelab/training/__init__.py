from tunelab.training.loop import TrainResult, evaluation_loss, train_model
from tunelab.training.memory import PeakMemory

__all__ = ["PeakMemory", "TrainResult", "evaluation_loss", "train_model"]
