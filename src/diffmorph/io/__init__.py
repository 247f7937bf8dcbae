"""Images in; videos, GIFs, frames, pictures and maps files out."""
