"""Seasonal campaigns: the safety calendar and the "when" of each campaign.

- :mod:`bot.campaigns.calendar`: public holidays and make-up workdays (official where published,
  computed otherwise), per-region school terms and breaks, per-deployment overrides, and the national
  safety days; school-day arithmetic.
- :mod:`bot.campaigns.rules`: the declarative ``when`` rules of a campaign, evaluated against a
  :class:`~bot.campaigns.calendar.Calendar` to concrete firing times (Asia/Shanghai).
"""
