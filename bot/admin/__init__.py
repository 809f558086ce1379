"""``parley admin``: the running bot's admin socket API and the CLI that talks to it.
"""
