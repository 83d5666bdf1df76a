package org.cartfhir.hapi;

import jakarta.servlet.FilterChain;
import jakarta.servlet.ServletException;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import jakarta.servlet.http.HttpServletResponseWrapper;
import java.io.IOException;
import org.springframework.web.filter.OncePerRequestFilter;

/**
 * HAPI answers a bulk export status poll with a fixed {@code Retry-After: 120}. A test that
 * honours it would wait two minutes per poll, so this server says {@code seconds} instead.
 */
public class RetryAfterFilter extends OncePerRequestFilter {

	private static final String RETRY_AFTER = "Retry-After";
	private final int mySeconds;

	public RetryAfterFilter(int seconds) {
		mySeconds = seconds;
	}

	@Override
	protected void doFilterInternal(HttpServletRequest request, HttpServletResponse response, FilterChain chain)
			throws ServletException, IOException {
		if (mySeconds < 0) {
			chain.doFilter(request, response);
			return;
		}
		String value = Integer.toString(mySeconds);
		chain.doFilter(request, new HttpServletResponseWrapper(response) {
			@Override
			public void setHeader(String name, String headerValue) {
				super.setHeader(name, RETRY_AFTER.equalsIgnoreCase(name) ? value : headerValue);
			}

			@Override
			public void addHeader(String name, String headerValue) {
				super.addHeader(name, RETRY_AFTER.equalsIgnoreCase(name) ? value : headerValue);
			}

			@Override
			public void setIntHeader(String name, int headerValue) {
				super.setIntHeader(name, RETRY_AFTER.equalsIgnoreCase(name) ? mySeconds : headerValue);
			}

			@Override
			public void addIntHeader(String name, int headerValue) {
				super.addIntHeader(name, RETRY_AFTER.equalsIgnoreCase(name) ? mySeconds : headerValue);
			}
		});
	}
}
