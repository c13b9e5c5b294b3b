"""Helpers shared by the training-engine tests (imported as a plain module from tests/)."""
import pytest


def run_interrupted(trainer, interrupt_after: int, resume: bool = False):
    """Run ``trainer`` and stop it with KeyboardInterrupt right after the checkpoint of epoch
    ``interrupt_after`` (1-based) is written, as a user's Ctrl-C there would."""
    save = trainer.save_checkpoint

    def save_then_interrupt(epoch):
        save(epoch)
        if epoch + 1 == interrupt_after:
            raise KeyboardInterrupt
    trainer.save_checkpoint = save_then_interrupt
    with pytest.raises(KeyboardInterrupt):
        trainer.run(resume=resume)
    return trainer
