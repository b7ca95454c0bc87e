"""Pure Python + Gymnasium: the live environments, their spaces and monitors.

Nothing in this package imports Django or DRF; settings arrive as arguments.
"""

# A server draws off screen only ("human" rendering is refused): pygame, which the
# rgb_array renderers use, gets SDL's dummy drivers (no display or sound device
# needed, no complaint about a missing one) and keeps its banner out of the log.
# Set in every process that runs envs (the server's, Ray's hosts).
HEADLESS = {
    "SDL_VIDEODRIVER": "dummy",
    "SDL_AUDIODRIVER": "dummy",
    "PYGAME_HIDE_SUPPORT_PROMPT": "1",
}
