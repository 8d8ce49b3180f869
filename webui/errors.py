"""Every failure of a request becomes one sentence for the person who sent it; the server goes on."""

from __future__ import annotations

import functools
import logging
from typing import Callable

import gradio as gr
import torch

from portrait.errors import PortraitError

from .memory import release_freed_memory

logger = logging.getLogger(__name__)

OUT_OF_MEMORY = "The GPU ran out of memory. Try fewer images or a smaller size."


def user_errors(handler: Callable) -> Callable:
    """Show engine errors as they are, out-of-memory as advice, anything else as a short apology; and give
    the memory the request used back to the system, whatever happened (webui/memory.py)."""

    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except PortraitError as error:
            raise gr.Error(str(error)) from error
        except torch.OutOfMemoryError as error:
            torch.cuda.empty_cache()
            raise gr.Error(OUT_OF_MEMORY) from error
        except Exception as error:
            logger.exception("Request failed")
            raise gr.Error(
                f"Something went wrong ({type(error).__name__}); the details are in the server log."
            ) from error
        finally:
            release_freed_memory()

    return wrapped
