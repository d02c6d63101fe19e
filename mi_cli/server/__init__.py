"""The token server: IMDS and App Service token endpoints, OpenID metadata and JWKS."""
