"""The reply side of a chat platform: streamed edits paced to the platform, the placeholder
and its edits (``PlatformReply``), and splitting long answers into messages.
"""
