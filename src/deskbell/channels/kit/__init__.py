"""What channel modules share and are not channels themselves: templates (`render`), text and
Slack escaping (`text`, `mrkdwn`), the SSRF guard (`netguard`), the HTTP client (`http`), email
plumbing (`addresses`, `smtp`), Standard Webhooks secrets (`whsec`) and the sample requests of
config checks and test sends (`sample`).

They live apart so that `deskbell.channels` holds channel modules only: the registry finds
every module there and reads its `CHANNEL_TYPE`.
"""
