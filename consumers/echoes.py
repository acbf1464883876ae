"""Which messages can be our own replies coming back (pure): the ones we could have posted.

An `ext_ref` is only a claim: a customer can type `{"ext_ref": ...}` into a widget. Our replies
are posted with the bot's token as outgoing messages, so they come back from an agent bot, or,
on channels that drop the sender, from no person at all; and on an API inbox, where only the
integration holding the inbox can post, our posts come back as `incoming` (chatwoot.md §5).
Never from a contact of another channel, nor from a human agent.
"""

from __future__ import annotations

from ingress import views

API_CHANNEL = "Channel::Api"


def could_be_ours(message: views.Message) -> bool:
    if message.conversation is not None and message.conversation.channel == API_CHANNEL:
        return True
    sender = message.sender
    if sender is not None:
        return sender.type == "agent_bot"
    return message.message_type in ("outgoing", 1)
