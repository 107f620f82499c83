# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The places that run workers (tiers). ``base`` is the contract, ``registry`` finds the tiers,
``common`` holds what they share; every other module here is one tier and exposes ``TIER``."""
